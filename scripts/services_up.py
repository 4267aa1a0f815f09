"""Exit 0 when the PostgreSQL and Redis at the given URLs answer, 1 otherwise."""

import socket
import sys
from urllib.parse import urlparse


def answers(url: str, default_port: int) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1",
                                       parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(0 if answers(sys.argv[1], 5432) and answers(sys.argv[2], 6379) else 1)
