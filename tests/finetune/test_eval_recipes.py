"""The GPU recipes: valid shell, flags the project's commands accept, the request vLLM expects."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from diffagent.agent import prompts
from diffagent.agent.llm_openai import OpenAIBackend
from diffagent.ui.cli import build_parser

from ..fakes import make_card

RECIPES = Path(__file__).resolve().parents[2] / "finetune" / "recipes"
SCRIPTS = sorted(RECIPES.glob("*.sh"))


def _commands(script: Path, program: str) -> list[list[str]]:
    """Each `program ...` command of a script, continuation lines joined, variables filled."""
    text = script.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(program + " ")]
    filled = [re.sub(r"\$\{?[A-Z_]+\}?", "X", line) for line in lines]
    return [shlex.split(line)[1:] for line in filled]


def test_recipes_are_valid_bash() -> None:
    assert {p.name for p in SCRIPTS} >= {"sft_7b.sh", "rrhf_7b.sh", "serve_vllm.sh", "eval_7b.sh"}
    for script in SCRIPTS:
        subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("name", ["sft_7b.sh", "rrhf_7b.sh", "eval_7b.sh"])
def test_recipe_flags_exist(name: str) -> None:
    commands = _commands(RECIPES / name, "diffagent")
    assert len(commands) == 1
    args = build_parser().parse_args(commands[0])  # exits (SystemExit) on an unknown flag
    assert args.command == "finetune"


def _lora_modules() -> dict[str, str]:
    """The LoRA modules (name to path) that serve_vllm.sh serves."""
    args = _commands(RECIPES / "serve_vllm.sh", "vllm")[0]
    assert args[0] == "serve" and "--enable-lora" in args
    start = args.index("--lora-modules") + 1
    modules: dict[str, str] = {}
    for value in args[start:]:
        if value.startswith("--"):
            break
        name, _, path = value.partition("=")
        modules[name] = path
    return modules


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Recorder.bodies.append({"path": self.path, **body})
        reply = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": '{"model": "Corgi"}'},
                }
            ],
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def fake_vllm() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.bodies = []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_asks_for_the_served_lora_with_structured_output(fake_vllm: str) -> None:
    modules = _lora_modules()
    assert "planner" in modules
    eval_args = _commands(RECIPES / "eval_7b.sh", "diffagent")[0]
    served = {
        value.partition("=")[2]
        for flag, value in zip(eval_args, eval_args[1:], strict=False)
        if flag == "--planner-model"
    }
    assert {"planner", "planner-sft"} <= served and set(modules) <= served

    backend = OpenAIBackend(fake_vllm, model="planner")
    schema = prompts.generate_json_schema()
    messages = prompts.generate_messages("a corgi", "", [make_card(1, "Corgi")])
    assert backend.complete(messages, json_schema=schema) == '{"model": "Corgi"}'

    body = _Recorder.bodies[-1]
    assert body["path"] == "/v1/chat/completions"
    assert body["model"] == "planner"  # the LoRA module name, not the base model
    assert body["messages"] == messages
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert body["response_format"]["json_schema"]["name"]
