"""The portal's Ed25519 signing key: tenant digests (and later exports) are signed with it.

The key comes from ``LEDGER_SIGNING_KEY`` (a PEM private key, or 32 raw bytes in base64;
``LEDGER_SIGNING_KEY_FILE`` for a mounted secret). Without it a key is generated once and kept
(mode 0600) in the data folder. ``verify_signature`` needs no Django, so offline verifiers can
use it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"


def _load(raw: str) -> Ed25519PrivateKey:
    raw = raw.strip()
    if raw.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(raw.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("LEDGER_SIGNING_KEY is not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw, validate=True))


def _generate_at(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _load(path.read_text())
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


@lru_cache(maxsize=1)
def signing_key() -> Ed25519PrivateKey:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from .env import env_str

    raw = env_str("LEDGER_SIGNING_KEY")
    if raw:
        try:
            return _load(raw)
        except ValueError as exc:
            raise ImproperlyConfigured(f"LEDGER_SIGNING_KEY is not usable: {exc}") from exc
    path = Path(settings.DATA_DIR) / "signing_key.pem"
    return _load(path.read_text()) if path.exists() else _generate_at(path)


def public_key_b64(key: Ed25519PublicKey | None = None) -> str:
    public = key or signing_key().public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(public_b64: str | None = None) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(base64.b64decode(public_b64 or public_key_b64())).hexdigest()[:16]


def sign(data: bytes) -> str:
    return base64.b64encode(signing_key().sign(data)).decode()


def verify_signature(public_b64: str, data: bytes, signature_b64: str) -> bool:
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
        public.verify(base64.b64decode(signature_b64), data)
    except (InvalidSignature, ValueError):
        return False
    return True
