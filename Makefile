# plmlens: `make demo` (main job on the built-in default) and `make test` (full test suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PROMOD3_DB := /usr/share/promod3/loop_data/structure_db.dat

.PHONY: install system-deps test demo lint clean

install: system-deps $(VENV)/.installed

# Real structures (promod3-data), DSSP (mkdssp) and a headless browser for the report tests (chromium)
# come from Debian; install them when apt can.
system-deps:
	@if [ ! -f $(PROMOD3_DB) ] || ! command -v mkdssp >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq promod3-data dssp chromium; \
	  else \
	    echo "plmlens: promod3-data, dssp or chromium is missing and apt-get is not usable here;" \
	         "integration tests that need them will fail." >&2; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# Pretrained antibody pLMs shipped in wheels: sapiens and iglm pin old torch in their metadata,
	# so they go in without dependencies (iglm is non-commercial: an optional extra, installed for tests).
	$(BIN)/pip install -q --no-deps sapiens==1.0.5 iglm==0.1.0
	# NGL (the 3D viewer the paper used) from npm; plmlens inlines it into its offline pages.
	npm install --silent --no-audit --no-fund --ignore-scripts --prefix $(VENV)/share/plmlens ngl@2.5.0
	touch $@

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest

demo: install
	$(BIN)/plmlens demo --overwrite

lint: install
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
