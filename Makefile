# Two commands do everything on a fresh clone (with ../shared beside it):
#   make repro   # venv if missing, dvc pull, dvc repro, print a short results summary
#   make test    # venv if missing, dvc pull, unit tests + notebooks (nbval) + ruff
# and a third opens the notebooks:
#   make lab     # JupyterLab on the project's kernel (`groupsc`), autosave off
# and the rendered notebooks and docs, offline: open site/index.html (the `site` stage).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# glibc returning memory to the OS slows torch 2-3x on large unfold/fold work (measured here).
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 4000000000
PYTEST_WORKERS ?= 2
# The notebooks' kernel: the venv's Python with the MALLOC settings above (kernel.json env), so
# a kernel started from JupyterLab runs as fast as papermill's; papermill and nbval name it too.
KERNEL := groupsc
LAB_PORT ?= 8888

.PHONY: all venv data repro test lint lab notebooks browser clean-venv

all: repro

$(VENV)/.installed: requirements.txt pyproject.toml jupyter/overrides.json
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing requirements into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
		| { grep -v "^WARNING: Location" || true; }
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 \
		| { grep -v "^WARNING: Location" || true; }
	@$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "GroupSC (.venv)" \
		--env MALLOC_MMAP_MAX_ $(MALLOC_MMAP_MAX_) \
		--env MALLOC_TRIM_THRESHOLD_ $(MALLOC_TRIM_THRESHOLD_) > /dev/null
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $@

venv: $(VENV)/.installed

data: venv
	dvc pull

repro: data
	dvc repro
	@python -m groupsc.readme
	@dvc repro -q site   # the README's tables may have just changed
	@python -m groupsc.results --short

test: data browser
	python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --nbval-lax --nbval-kernel-name $(KERNEL) \
		tests notebooks
	ruff check lib tests notebooks benchmarks

# The notebooks in notebooks/ are the pipeline's outputs: reading them leaves them untouched
# (autosave is off); saving one makes its DVC stage `modified` (git checkout restores it).
lab: data
	jupyter lab --no-browser --allow-root --port $(LAB_PORT) --notebook-dir notebooks

# The site's browser test drives Debian's Chromium (Playwright's own browser download needs a
# CDN this machine cannot reach); installed once, as root, from Debian's packages.
browser:
	@command -v chromium > /dev/null || { echo "installing Debian's chromium (once)"; \
		apt-get update -qq > /dev/null && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium > /dev/null; }

lint: venv
	ruff check lib tests notebooks benchmarks

clean-venv:
	rm -rf $(VENV)
