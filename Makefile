# Everything a fresh machine needs: `make demo` and `make test` create their own environments.
# Only python3 (3.12+; .python-version pins 3.12 under pyenv) is assumed to exist.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
export UV_PYTHON_DOWNLOADS := never
export PYTHONDONTWRITEBYTECODE := 1

# Django versions the suite also runs against (the main venv has the newest, 6.1).
DJANGO_MATRIX := 5.2 6.0
EXTRAS := mailgun,postmark,sendgrid,amazon-ses,brevo,resend,queue

.PHONY: help install lint typecheck pytest matrix test test-fast test-slow demo serve chromium redis bench clean

help:
	@echo "make demo   - four tenants send through their own credentials to loopback fake servers"
	@echo "make serve  - the example site in a browser (admin, tenant pages, received mail)"
	@echo "make test   - lint, type-check, tests with coverage (6.1), and the Django 5.2/6.0 matrix"
	@echo "make bench  - benchmarks (a report, not a gate)"

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "tenantmail needs Python 3.12+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv

$(VENV)/.installed: $(BIN)/python pyproject.toml Makefile
	$(UV) pip install --quiet --python $(BIN)/python -e ".[$(EXTRAS)]" --group test --group lint
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

# One venv per older Django, built by uv from the same lock-free spec; suite without coverage.
$(VENV)-django%/.installed: $(BIN)/python pyproject.toml Makefile
	$(UV) venv --quiet --allow-existing --python "$$($(BIN)/python -c 'import sys; print(sys.executable)')" $(VENV)-django$*
	$(UV) pip install --quiet --python $(VENV)-django$*/bin/python -e ".[$(EXTRAS)]" --group test "django~=$*.0"
	touch $@

matrix: $(foreach v,$(DJANGO_MATRIX),$(VENV)-django$(v)/.installed)
	@set -e; for v in $(DJANGO_MATRIX); do \
	  echo "== Django $$v"; \
	  $(VENV)-django$$v/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); \
	done

test: chromium redis lint typecheck pytest matrix

# The Redis rate-limit test's redis-server (Debian's), installed when root with apt; else it skips.
redis:
	@bash scripts/ensure-redis.sh

# The browser test's headless Chromium (Debian's), installed when root with apt; else it skips.
chromium:
	@bash scripts/ensure-chromium.sh

test-fast: install
	$(BIN)/python -m pytest -q -x

# Long-running isolation/soak tests (run by .ci/run after `make test`).
test-slow: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

demo: install
	$(BIN)/python -m example_site.demo

# The example site and its fake ESP/SMTP servers, in one process (PORT=8000 by default).
serve: install
	$(BIN)/python -m example_site.manage serve $(if $(PORT),--port $(PORT))

bench: install
	$(UV) pip install --quiet --python $(BIN)/python --group bench
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV)-django* .pgdata .coverage htmlcov .mypy_cache .ruff_cache .pytest_cache
