# Two commands do everything on a fresh clone (with ../shared beside it):
#   make repro   # venv if missing, dvc pull, dvc repro, print the results summary
#   make test    # venv if missing, dvc pull, unit tests + notebooks (nbval) + ruff
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# glibc returning memory to the OS slows torch 2-3x on large unfold/fold work (measured here).
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 4000000000
PYTEST_WORKERS ?= 2

.PHONY: all venv data repro test lint notebooks clean-venv

all: repro

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing requirements into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
		| { grep -v "^WARNING: Location" || true; }
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 \
		| { grep -v "^WARNING: Location" || true; }
	@touch $@

venv: $(VENV)/.installed

data: venv
	dvc pull

repro: data
	dvc repro
	@python -m groupsc.results

test: data
	python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --nbval-lax tests notebooks
	ruff check lib tests notebooks benchmarks

lint: venv
	ruff check lib tests notebooks benchmarks

clean-venv:
	rm -rf $(VENV)
