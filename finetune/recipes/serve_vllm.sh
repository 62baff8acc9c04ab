#!/usr/bin/env bash
# Serve the base model with the SFT and RRHF adapters on vLLM's OpenAI-compatible server.
#
#   bash finetune/recipes/serve_vllm.sh
#
# Each adapter is a LoRA module: a request with model "planner" runs the RRHF adapter,
# "planner-sft" the SFT one. The agent's OpenAI backend talks to it unchanged: it sends
# response_format {"type": "json_schema", ...} (structured outputs; vLLM's default backend
# picks xgrammar, or guidance for schema features xgrammar lacks) in generate mode and
# /v1/completions with echo + logprobs in rank mode:
#
#   DIFFAGENT_PLANNER__BACKEND=openai DIFFAGENT_PLANNER__BASE_URL=http://127.0.0.1:8000/v1 \
#   DIFFAGENT_PLANNER__MODEL=planner DIFFAGENT_PLANNER__MODE=generate \
#       diffagent recommend --catalog "$CATALOG" "a cute happy corgi, pixel art"
set -euo pipefail
source "$(dirname "$0")/common.sh"

# --max-lora-rank must be at least the adapters' r (8 by default).
vllm serve "$BASE_MODEL_DIR" \
    --served-model-name qwen7b-base \
    --enable-lora \
    --lora-modules planner="$RRHF_ADAPTER" planner-sft="$SFT_ADAPTER" \
    --max-lora-rank 16 \
    --max-loras 2 \
    --max-model-len 4096 \
    --port "$PORT"
