#!/bin/sh
# Run once by the postgres image when its data volume is new: the role web, worker and beat
# connect as. It owns no table (migrate runs as the owner, POSTGRES_USER, and grants it what
# the portal needs: docs/operations.md, "Database roles"), so the ledger stays append-only
# even for the application itself.
set -eu
psql -v ON_ERROR_STOP=1 -v password="$LEDGER_APP_PASSWORD" \
     --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE ledger_app LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;
SQL
