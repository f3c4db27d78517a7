# Every target works on a fresh machine: it creates .venv and installs what it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Reinstall when pyproject.toml's content changes (nbdev rewrites the file, so its mtime is no guide)
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# torch/torchvision are pinned for the dev install (these wheels are cached on the project's machines)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install data demo test test-nbs test-slow pytest check-clean check-export check-outputs nbs readme docs docs-check bench clean

$(STAMP):
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[dev]' $(TORCH_PINS)
	$(PIP) install -q --no-deps 'aeon>=1.0'   # only for the time-series data files its wheel ships
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from the Debian package, unless $SSL_DATA points elsewhere
data:
	@if [ -z "$$SSL_DATA" ] && [ ! -f $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or set SSL_DATA=DIR (a folder with the four IDX .gz files)"; \
	    exit 1; \
	  fi; \
	fi

demo: install data
	$(VENV)/bin/ssl-pretrain --out demo_out --force   # the demo's own run folder: each `make demo` replaces the last run

# Fails if a command changes the notebooks, the library or the README
SNAPSHOT = find nbs self_supervised README.md -type f -not -path '*/__pycache__/*' -not -path '*/.ipynb_checkpoints/*' | sort | xargs sha1sum | sha1sum

check-clean: install
	@before=$$($(SNAPSHOT)); $(VENV)/bin/nbdev-clean; after=$$($(SNAPSHOT)); \
	if [ "$$before" != "$$after" ]; then echo "Notebooks are not clean: run nbdev-clean and commit"; git status --short nbs; exit 1; fi

check-export: install
	@before=$$($(SNAPSHOT)); $(VENV)/bin/nbdev-export; after=$$($(SNAPSHOT)); \
	if [ "$$before" != "$$after" ]; then echo "The library is out of sync with the notebooks: run nbdev-export and commit"; git status --short self_supervised; exit 1; fi
	$(PY) tools/make_readme.py --check

test-nbs: install data
	OMP_NUM_THREADS=1 $(VENV)/bin/nbdev-test --n-workers 2 --timing   # one torch thread per worker: two cores, two notebooks at a time

# Notebook cells marked `#| slow` and pytest tests marked `slow` (none yet: pytest's "no tests" exit code 5 is fine)
test-slow: install data
	OMP_NUM_THREADS=1 $(VENV)/bin/nbdev-test --n-workers 2 --flags slow
	$(VENV)/bin/pytest -q -n 2 -m slow tests || [ $$? -eq 5 ]

pytest: install data
	$(VENV)/bin/pytest -q -n 2 -m "not slow" tests

# Every notebook is saved with its outputs (they are the documentation): `make nbs` runs them and saves them
check-outputs: install
	$(PY) tools/run_nbs.py --check

nbs: install data
	$(PY) tools/run_nbs.py

test: check-clean check-export check-outputs test-nbs pytest

# README.md is generated from nbs/index.ipynb (tools/make_readme.py: nbdev-readme needs Quarto, not installable here)
readme: install
	$(PY) tools/make_readme.py

# The documentation site in _docs/, the standard nbdev way (Quarto renders the notebooks with their saved outputs;
# `nbdev-install-quarto` first; .github/workflows/deploy.yaml publishes it). docs-check needs no Quarto: nbdev's own
# processing of every notebook and show_doc of every export (tests/test_docs.py runs it in `make test`)
docs: install
	$(VENV)/bin/nbdev-docs

docs-check: install
	$(PY) tools/check_docs.py

# Every benchmark script; each prints its figures. The reliability, time-series and Fashion-MNIST tables are written
# into nbs/index.ipynb and README.md; the comparison trains every algorithm of the registry at one small budget
# (within an hour on 2 cores; larger with --epochs/--n-train)
bench: install data
	$(PY) bench/augment_cost.py
	$(PY) bench/loss_speed.py
	$(PY) bench/step_time.py
	$(PY) bench/reliability.py --readme
	$(PY) bench/ts_compare.py --readme
	$(PY) bench/clip_bench.py
	$(PY) bench/compat_matrix.py --docs
	$(PY) bench/compare_fmnist.py --readme
	$(PY) bench/fast_preset.py --readme

clean:
	rm -rf $(VENV) demo_out bench_out _docs _proc
