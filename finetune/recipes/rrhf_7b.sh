#!/usr/bin/env bash
# RRHF of the SFT adapter with the unified metric (Eq. 4) as reward, one GPU (stage 2 of SFTA).
#
#   BASE_MODEL_DIR=/models/Qwen2.5-7B-Instruct CATALOG=/data/catalog bash finetune/recipes/rrhf_7b.sh
#
# Each prompt's candidate APIs are generated with diffusers from the Civitai files in MODEL_STORE
# and scored with CLIP, ImageReward and HPS v2 (weights in common.sh), k seeds each (paper:
# k=10 for training); add --ray to spread candidate generation and scoring over a Ray cluster.
set -euo pipefail
source "$(dirname "$0")/common.sh"

diffagent finetune rrhf \
    --catalog "$CATALOG" \
    --model-dir "$BASE_MODEL_DIR" \
    --sft "$SFT_ADAPTER" \
    --reward unified \
    --candidates 4 \
    --seeds 3 \
    --bf16 \
    --batch-size 2 \
    --lr 2e-5 \
    --epochs 1 \
    --out "$RRHF_ADAPTER"
