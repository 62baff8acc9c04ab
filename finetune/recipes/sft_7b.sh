#!/usr/bin/env bash
# SFT of a LoRA adapter on a 7B-class planner, one GPU (stage 1 of the paper's SFTA).
#
#   BASE_MODEL_DIR=/models/Qwen2.5-7B-Instruct CATALOG=/data/catalog bash finetune/recipes/sft_7b.sh
#
# bf16 LoRA (r=8 on every linear layer) of a 7B model needs about 30-40 GB of GPU memory at
# batch 4: one A100/H100 80 GB. The project's `finetune sft` has no 4-bit (QLoRA) loading flag
# yet; on a 24 GB card lower --batch-size and add 4-bit loading there first.
set -euo pipefail
source "$(dirname "$0")/common.sh"

diffagent finetune sft \
    --catalog "$CATALOG" \
    --model-dir "$BASE_MODEL_DIR" \
    --format generate \
    --bf16 \
    --batch-size 4 \
    --lr 1e-4 \
    --epochs 1 \
    --save-steps 500 \
    --max-val 500 \
    --out "$SFT_ADAPTER"
