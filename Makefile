# Two commands do all the set-up on a fresh machine:
#   make run    - create .venv, install the locked dependencies, serve on SQLite (embedded default)
#                 on HOST:PORT (127.0.0.1:8000 unless given: make run PORT=9000)
#   make test   - the same set-up, then ruff, mypy and the whole test suite
#   make test-fast - the suite without the slow end-to-end tests (browser, several workers,
#                 faults), for the edit loop; make test never skips them
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := $(BIN)/uv
PYTEST_ARGS ?=
# Two pytest workers (pytest-xdist); whole files stay on one worker, so a module's servers
# and fixtures are made once. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: run test test-fast lint typecheck install lock clean audit sbom bench bench-spray bench-outbox bench-webhooks bench-mfa bench-privacy bench-scale fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Bytecode is compiled once here: uv does not by default, and with PYTHONDONTWRITEBYTECODE set
# every process (each server and worker a test starts) would recompile every import.
$(VENV)/.installed: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) pip install --quiet --python $(BIN)/python --require-hashes --compile-bytecode \
		-r requirements-dev.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed

# make run HOST=0.0.0.0 PORT=9000 to listen elsewhere (default: 127.0.0.1:8000).
HOST ?= 127.0.0.1
PORT ?= 8000
run: install
	$(BIN)/authkeep serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests examples bench scripts
	$(BIN)/ruff format --check src tests examples bench scripts

typecheck: install
	$(BIN)/mypy

test: lint typecheck sbom
	$(BIN)/python scripts/audit_deps.py requirements.lock
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# CycloneDX SBOM of the pinned runtime dependencies (written to sbom.json, git-ignored).
sbom: install
	$(BIN)/cyclonedx-py requirements requirements.lock --output-reproducible -o sbom.json
	@echo "SBOM written to sbom.json"

# pip-audit against the lock file; says plainly when its vulnerability database is unreachable.
audit: install
	$(BIN)/python scripts/audit_deps.py requirements.lock $(AUDIT_ARGS)

# Benchmarks (bench/RESULTS.md): wrk on loopback against authkeep, a bare FastAPI app, a
# JWT-only floor and fastapi-users (in its own venv: it pins older pwdlib and SQLAlchemy).
# Run it on a quiet machine; it takes about 15 minutes. Defaults: BENCH_ARGS="--seconds 5 --rounds 3".
BENCH_ARGS ?=
FU_VENV := bench/.venv-fastapi-users
$(FU_VENV)/.installed: bench/fastapi-users.requirements.txt
	$(PYTHON) -m venv $(FU_VENV)
	$(FU_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/fastapi-users.requirements.txt
	touch $@

bench: install $(FU_VENV)/.installed
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Password spraying with and without the challenge after failed logins (bench/README.md).
SPRAY_ARGS ?= --seconds 5 --rounds 3
bench-spray: install
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/spray.py $(SPRAY_ARGS)

# Outbox delivery (1 and 4 `authkeep worker`) to a local SMTP server, and what the outbox
# adds to a sign-up; PostgreSQL (bench/README.md). About 4 minutes.
OUTBOX_ARGS ?= --messages 1000 --seconds 5 --rounds 3
bench-outbox: install
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/outbox.py $(OUTBOX_ARGS)

# Login with TOTP against password-only login, and the step-up check on a sensitive route
# against a plain one (bench/README.md). About 1½ minutes.
MFA_ARGS ?= --seconds 4 --rounds 3
bench-mfa: install
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/mfa.py $(MFA_ARGS)

# Encryption at rest: login and the authenticated read against the revision before it (a
# temporary git worktree), and rotate-data over 100,000 accounts (bench/README.md).
PRIVACY_ARGS ?=
bench-privacy: install
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/privacy.py $(PRIVACY_ARGS)

# Production shape: login, /me and audit pages on an empty database and on one with 1,000,000
# users, 2,000,000 sessions and 10,000,000 audit rows (seeded with COPY by bench/scale_seed.py
# when missing: about a quarter of an hour and 15 GB, kept for the next run); the purge of
# 1,000,000 ended sessions under a login load; audit verify over the 10,000,000 rows
# (bench/README.md). SCALE_ARGS="--seed" seeds again; a small trial: SCALE_ARGS="--database
# authkeep_scale_small --users 10000 --sessions 20000 --expired 10000 --audit 100000".
SCALE_ARGS ?=
bench-scale: install
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

# Webhook delivery (1 and 4 `authkeep worker`) to a local receiver, and what writing events
# adds to an audited change, in the database and over HTTP; PostgreSQL (bench/README.md).
# About 5 minutes.
WEBHOOKS_ARGS ?= --events 1000 --writes 2000 --seconds 5 --rounds 3
bench-webhooks: install
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/webhooks.py $(WEBHOOKS_ARGS)

# The deep API fuzzing run (the test suite has a bounded in-process one): schemathesis
# against a live `authkeep serve` on SQLite, every check, --mode all, authenticated
# operations included (a fresh login per case), configured by schemathesis.toml. Bounded:
# FUZZ_ARGS="--max-examples 300 --max-time 420" by default; a JUnit report goes to
# schemathesis-report/. Exit 0 means no server error and no schema violation.
FUZZ_ARGS ?=
fuzz: install
	$(BIN)/python scripts/fuzz.py $(FUZZ_ARGS)

# Re-resolve the pinned dependencies (hashes included) after editing pyproject.toml.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) pip compile --quiet --generate-hashes --python-version 3.11 pyproject.toml -o requirements.lock
	$(UV) pip compile --quiet --generate-hashes --python-version 3.11 --extra dev pyproject.toml -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
