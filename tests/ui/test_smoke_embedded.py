"""Smoke test: the REST server over the agent with the real embedded planner (SmolLM2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from diffagent.ui.server import create_app


@pytest.mark.slow
def test_chat_over_rest_with_the_embedded_planner(
    tmp_path: Path, serve_app: Any, agent_builder: Any, catalog_cards: list[Any]
) -> None:
    agent = agent_builder(tmp_path / "db.sqlite", scripted=False)
    assert agent.context.backend.name != "scripted"
    with serve_app(create_app(agent)) as url:
        response = httpx.post(f"{url}/v1/chat", json={"message": "a corgi, pixel art"}, timeout=600)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["api"]["version_id"] in {card.version_id for card in catalog_cards}
    assert body["card"]["version_id"] == body["api"]["version_id"]
