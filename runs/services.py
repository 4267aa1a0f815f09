"""Domain operations on the ledger; every entry point (API, admin, CLI, tasks) calls these."""

from .ingest import BatchConflict, BatchInvalid, BatchRejected, IngestResult, ingest_batch

__all__ = ["BatchConflict", "BatchInvalid", "BatchRejected", "IngestResult", "ingest_batch"]
