"""The core every app stands on: tenants and tenant-owned models, roles and who may see
which tenant, API keys and personal access tokens, authentication, canonical JSON and
signing, and the job plumbing (outbox, locks, watchdogs) of every long task."""
