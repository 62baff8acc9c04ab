"""Hostile model names, file names and prompts become data in every export, never code."""

from __future__ import annotations

import ast
import json

import pytest

from diffagent.api import CheckpointRef, LoraRef, T2IApi
from diffagent.cards import CardFile, ModelCard, RecommendedParams, one_line
from diffagent.tools.exports import a1111_infotext, export_text

PAYLOAD = "import os; os.system('touch /tmp/pwned')"
HOSTILE = [
    f"Deliberate\n{PAYLOAD}\n#",
    f"Deliberate\r{PAYLOAD}\r#",
    f"Deliberate\r\n{PAYLOAD}\r\n#",
    f"Deliberate\u2028{PAYLOAD}\u2029#",
    f"Deliberate\x0c\n{PAYLOAD}",
    f"Deliberate'''\"\"\"\n{PAYLOAD}",
    f"Deliberate\\\n{PAYLOAD}",
]
EXPECTED_IMPORTS = {"torch", "diffusers"}


def _api(name: str) -> T2IApi:
    return T2IApi(
        model=name,
        type="LORA",
        base_model="SD 1.5",
        width=512,
        height=512,
        sampling_method="DPM++ 2M Karras",
        sampling_steps=20,
        cfg_scale=7.0,
        version_id=11,
        checkpoint=CheckpointRef(version_id=12, name=name),
        loras=[LoraRef(version_id=11, name=name, weight=0.7)],
        prompt=f"a cat <lora:{name}:0.7>\n{PAYLOAD}",
        negative_prompt=name,
        seed=3,
    )


def _imports_and_calls(code: str) -> tuple[set[str], set[str]]:
    tree = ast.parse(code)
    imports: set[str] = set()
    calls: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Call):
            calls.add(ast.unparse(node.func))
    return imports, calls


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("with_files", [False, True])
def test_hostile_names_are_quoted_in_the_diffusers_script(name: str, with_files: bool) -> None:
    files = {11: f"{name}.safetensors", 12: f"{name}.ckpt"} if with_files else None
    code = export_text(_api(name), "diffusers", files)
    imports, calls = _imports_and_calls(code)
    assert imports == EXPECTED_IMPORTS
    assert not {call for call in calls if "system" in call or call.startswith("os")}
    statements = ast.parse(code).body
    clean = export_text(_api("Deliberate"), "diffusers")
    assert len(statements) == len(ast.parse(clean).body)  # the name added no statement
    for line in code.splitlines():
        assert not line.lstrip().startswith(("import os", "os.system"))


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("fmt", ["a1111", "comfyui"])
def test_hostile_names_stay_strings_in_json_exports(name: str, fmt: str) -> None:
    files = {11: f"{name}.safetensors", 12: f"{name}.ckpt"}
    data = json.loads(export_text(_api(name), fmt, files))
    text = json.dumps(data)
    assert PAYLOAD.split(";")[1].strip() in text  # kept, as data inside a JSON string
    if fmt == "comfyui":
        assert data["1"]["inputs"]["ckpt_name"] == files[12]
    else:
        assert data["override_settings"]["sd_model_checkpoint"] == f"{name}"


def test_infotext_model_line_stays_one_line() -> None:
    name = f"Deliberate\nSteps: 99\n{PAYLOAD}"
    text = a1111_infotext(_api(name), 3, {12: f"{name}.safetensors"})
    last = text.splitlines()[-1]
    assert last.startswith("Steps: 20") and "Model: Deliberate Steps: 99" in last


def test_card_names_are_one_line_at_ingestion() -> None:
    card = ModelCard(
        version_id=1,
        model_id=1,
        air="urn:air:sd1:checkpoint:civitai:1@1",
        name=f"Deliberate\n{PAYLOAD}\r#",
        version_name="v2\u2028beta",
        type="Checkpoint",
        base_model="SD 1.5",
        description="d",
        file=CardFile(name="a\nb.safetensors", format="SafeTensor", sha256="0" * 64, url="u"),
        recommended=RecommendedParams(
            width=512, height=512, sampling_method="Euler a", sampling_steps=20, cfg_scale=7
        ),
    )
    assert card.name == f"Deliberate {PAYLOAD} #"
    assert card.version_name == "v2 beta"
    assert card.file.name == "a b.safetensors"
    assert one_line("  a\r\n\tb \x00 ") == "a b"
