#!/usr/bin/env bash
# Settings shared by the 7B recipes; override any of them in the environment.
# Sourced by sft_7b.sh, rrhf_7b.sh, serve_vllm.sh and eval_7b.sh (not run on its own).

# A local copy of a 7B-class chat model (nothing is downloaded by the project), e.g.
#   huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir /models/Qwen2.5-7B-Instruct
BASE_MODEL_DIR="${BASE_MODEL_DIR:-/models/Qwen2.5-7B-Instruct}"
# The DABench catalog (diffagent catalog build --civitai CRAWL --out DIR).
CATALOG="${CATALOG:-/data/diffagent-catalog}"
RUNS="${RUNS:-runs/qwen7b}"
SFT_ADAPTER="${SFT_ADAPTER:-$RUNS/sft}"
RRHF_ADAPTER="${RRHF_ADAPTER:-$RUNS/rrhf}"
# vLLM serves each adapter under a LoRA module name: the agent asks for that name as its model.
PORT="${PORT:-8000}"
PLANNER_URL="${PLANNER_URL:-http://127.0.0.1:$PORT/v1}"
# Civitai downloads and scorer weights for the unified reward and Table 2 (docs/tools-scoring.md).
MODEL_STORE="${MODEL_STORE:-/data/civitai-models}"
export DIFFAGENT_GENERATION__MODEL_STORE="$MODEL_STORE"
export DIFFAGENT_SCORING__CLIP_PATH="${DIFFAGENT_SCORING__CLIP_PATH:-/data/scorers/ViT-B-32.pt}"
export DIFFAGENT_SCORING__IMAGEREWARD_PATH="${DIFFAGENT_SCORING__IMAGEREWARD_PATH:-/data/scorers/ImageReward.pt}"
export DIFFAGENT_SCORING__IMAGEREWARD_MED_CONFIG="${DIFFAGENT_SCORING__IMAGEREWARD_MED_CONFIG:-/data/scorers/med_config.json}"
export DIFFAGENT_SCORING__HPS_PATH="${DIFFAGENT_SCORING__HPS_PATH:-/data/scorers/HPS_v2_compressed.pt}"
