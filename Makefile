# ledger-portal: `make demo` runs the portal with demo data, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The PostgreSQL and Redis the test suite also runs against (skipped if unreachable,
# unless REQUIRE_SERVICES=1 as in CI).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ledger_portal
TEST_REDIS_URL    ?= redis://127.0.0.1:6379/15
DEMO_ADDR ?= 127.0.0.1:8000
# The demo's tool server (loopback only): the tools its replays and rollbacks call.
export DEMO_TOOLS_ADDR ?= 127.0.0.1:8765
# Where the demo portal may send requests (tools, OPA, webhooks on this machine only).
export LEDGER_EGRESS_ALLOW ?= 127.0.0.1,localhost

.PHONY: install demo demo-data worker serve test test-sqlite test-postgres lint docs bench-report clean

install: $(VENV)/.installed

# The portal and, beside it, the agent client (client/, a distribution of its own).
$(VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e ./client
	touch $@

demo-data: install
	DEBUG=1 $(BIN)/python manage.py migrate --no-input -v0
	DEBUG=1 $(BIN)/python manage.py seed_demo

# The demo's tools run in the background while the portal runs, and stop with it.
demo: demo-data
	@echo "Portal at http://$(DEMO_ADDR)/ (admin at /admin/, API docs at /api/docs/)"
	DEBUG=1 $(BIN)/python manage.py demo_tools & tools=$$!; \
	  trap 'kill $$tools 2>/dev/null' EXIT INT TERM; \
	  DEBUG=1 $(BIN)/python manage.py runserver $(DEMO_ADDR)

# Production-style, as deploy/entrypoint.sh runs it: migrations, collected static files served
# by WhiteNoise, gunicorn with deploy/gunicorn.conf.py, DEBUG off (set SECRET_KEY,
# ALLOWED_HOSTS and the rest as docs/operations.md says; worker and beat run apart).
serve: install
	$(BIN)/python manage.py migrate --no-input -v0
	deploy/entrypoint.sh web

# The Celery worker with beat (tenant digests); on the embedded default it needs no server.
# Replays and rollbacks asked for in the demo's pages run here, calling the demo's tools.
worker: install
	DEBUG=1 $(BIN)/celery -A ledger_portal worker --beat --loglevel INFO

# Both suites at once (each on its own database, Redis and data folder): on two cores the
# pass takes about the time of the longer one. Each suite's output is printed when it ends.
test: install lint
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

test-sqlite: install
	@echo "== tests on the embedded default (SQLite, no Redis)"
	env -u DATABASE_URL -u REDIS_URL LEDGER_DATA_DIR=$(CURDIR)/data/test $(BIN)/pytest -q --durations=25

test-postgres: install
	@if $(BIN)/python scripts/services_up.py "$(TEST_DATABASE_URL)" "$(TEST_REDIS_URL)"; then \
	  echo "== tests on PostgreSQL + Redis"; \
	  DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	    LEDGER_DATA_DIR=$(CURDIR)/data/test-postgres $(BIN)/pytest -q --durations=25; \
	elif [ "$(REQUIRE_SERVICES)" = "1" ]; then \
	  echo "PostgreSQL/Redis unreachable and REQUIRE_SERVICES=1"; exit 1; \
	else echo "== PostgreSQL or Redis unreachable: PostgreSQL tests skipped"; fi

lint: install docs
	$(BIN)/ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run -v0
	$(BIN)/mypy .

# The manuals (docs/) as a site in data/site; strict, so a broken link or anchor fails.
docs: install
	@mkdir -p data
	@$(BIN)/mkdocs build --strict --site-dir $(CURDIR)/data/site > data/mkdocs.log 2>&1 \
	  || (cat data/mkdocs.log; echo "docs: the manuals do not build (above)"; exit 1)
	@echo "docs: built into data/site"

# Every benchmark under bench/, one after another, against the local PostgreSQL; the figures
# table in bench/README.md is rewritten from their own verdict lines (BENCH_SIZE=quick: smaller
# data, same cases). Hours at full size: admin_changelist loads 1,000,000 tool calls.
BENCH_SIZE ?= full
bench-report: install
	$(BIN)/pip install -q gunicorn
	$(BIN)/python -m bench.report --size $(BENCH_SIZE) $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

clean:
	rm -rf $(VENV) data
