"""Operations on recorded runs: replays (sandbox and live), rollbacks, the tool connectors
they call through, the secrets those use, divergences and tool connection changes.

Above the ledger (``runs``) and governance (``policies``, ``approvals``), below incidents and
exports: it may import those two layers, never the reverse (``tests/test_layers.py``)."""
