# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# No wheel cache: what pip fetches from PyPI would otherwise sit twice on disk (venv + ~/.cache/pip).
export PIP_NO_CACHE_DIR := 1

.PHONY: demo test test-fast install synth-isp clean-venv

$(STAMP): requirements/base.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || bash scripts/check-disk.sh .
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/base.txt
	# onnx2tf 1.x on Python 3.11: its declared deps conflict with tensorflow 2.21, so no deps (docs/method.md §8)
	$(BIN)/pip install --quiet --no-deps onnx2tf==1.29.24
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/isp-search demo

# The method end to end on the synthetic set (about 6 min on 2 CPU cores): pretrain, then unpaired from it.
# Look at runs/synth_unpaired/samples/step_000150.png: demosaiced RAW | output | target.
synth-isp: $(STAMP)
	$(BIN)/isp-search train configs/synth_pretrain.yaml --run-dir runs/synth_pretrain
	$(BIN)/isp-search train configs/synth_unpaired.yaml --run-dir runs/synth_unpaired

test: $(STAMP)
	bash scripts/system-deps.sh
	$(BIN)/python -m pytest -q

# The fast tier while editing (under 3 min on 2 CPU cores): every test but those marked slow, i.e. over ~20 s, a real
# Ray cluster or a full export. `make test` (what CI runs) stays the whole suite.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
