# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PROBE_PORT ?= 8081

.PHONY: run test lint lint-config format install migrate demo test-sqlite test-postgres clean bench image-check

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The development OIDC provider of the staff UI's sign-in (node-oidc-provider, pinned by its lock).
devtools/oidc/node_modules/.installed: devtools/oidc/package.json devtools/oidc/package-lock.json
	cd devtools/oidc && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed devtools/oidc/node_modules/.installed

# The development targets run with DEBUG on unless told otherwise: outside DEBUG the app
# refuses to start without real secrets (docs/security.md), and `make run` has none.
DEV := DEBUG=$${DEBUG:-1}

migrate: install
	mkdir -p var
	$(DEV) $(PY) manage.py migrate --noinput

demo: migrate
	$(DEV) $(PY) manage.py load_demo_data

# Web, q2 worker and the local stand-in of the send API, on SQLite and the ORM broker
# unless DATABASE_URL / REDIS_URL say otherwise. Ctrl-C stops them all.
run: demo
	$(DEV) $(PY) manage.py run_stack --host $(HOST) --port $(PORT) --probe-port $(PROBE_PORT)

lint: install lint-config
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# Each deployment file checked by the tool made for it (the Kubernetes manifests: by their
# schemas in tests/test_deploy.py).
lint-config: install
	$(VENV)/bin/hadolint Dockerfile
	$(PY) deploy/check_compose.py docker-compose.yml deploy/compose.host-services.yml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.gitlab-ci .gitlab-ci.yml

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The whole suite on SQLite; again on PostgreSQL (and Redis) when DATABASE_URL is set.
test: lint test-sqlite test-postgres

test-sqlite: install
	mkdir -p var test-artifacts
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: install
	@if [ -n "$$DATABASE_URL" ]; then \
		mkdir -p var test-artifacts && $(PY) -m pytest $(PYTEST_ARGS); \
	else \
		echo "DATABASE_URL is not set: the PostgreSQL pass is skipped"; \
	fi

clean:
	rm -rf var/*.sqlite3* .pytest_cache

# Quick benchmarks (small sizes, under 5 minutes) against PostgreSQL: each script creates
# and drops its own bench_* database through BENCH_DATABASE_URL (see docs/benchmarks.md).
BENCH_SCRIPTS ?= fanout dispatch stats api memory
bench: install
	@for name in $(BENCH_SCRIPTS); do \
		echo "== bench/$$name.py --quick"; \
		$(PY) bench/$$name.py --quick || exit 1; \
	done

# Builds the image with podman and runs it for real: migrate, web, worker and the send API
# stand-in, plainly and through podman-compose (docs/deploy.md). Needs root; installs podman
# and the rest with apt-get when missing. IMAGE_CHECK_ARGS="--mode run --keep-image", say.
image-check: install
	$(PY) deploy/image_check.py $(IMAGE_CHECK_ARGS)
