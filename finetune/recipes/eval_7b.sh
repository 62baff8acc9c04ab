#!/usr/bin/env bash
# The paper's Tables 1 and 2 for the served 7B planners (serve_vllm.sh must be running).
#
#   bash finetune/recipes/eval_7b.sh
#
# Base checkpoints (Baseline and Baseline*) are files in MODEL_STORE; k=3 seeds at 512 px.
set -euo pipefail
source "$(dirname "$0")/common.sh"

diffagent finetune eval \
    --catalog "$CATALOG" \
    --prompts dabench-test coco parti \
    --planner-url "$PLANNER_URL" \
    --planner-model stock=qwen7b-base \
    --planner-model sft=planner-sft \
    --planner-model rrhf=planner \
    --limit 1000 \
    --seeds 3 \
    --device cuda \
    --model-store "$MODEL_STORE" \
    --base-checkpoint "SD 1.5=v1-5-pruned-emaonly.safetensors" \
    --out "$RUNS/eval"
