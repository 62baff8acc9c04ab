"""Chainlit chat UI over the DiffAgent facade; one agent session per chat.

Run it (the catalog defaults to the starter one; DIFFAGENT_CATALOG points at another and
DIFFAGENT_MODE picks rank, generate or retrieval):

    chainlit run ui/chainlit_app.py --host 127.0.0.1 --port 8001
    DIFFAGENT_CATALOG=/tmp/catalog-full chainlit run "$(python -c \
        'import diffagent.ui.chainlit_app as m; print(m.__file__)')"
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import chainlit as cl
from pydantic import BaseModel

from diffagent.agent.service import UnknownSessionError

if TYPE_CHECKING:
    from diffagent.ui.server import AgentLike

CIVITAI_VERSION_URL = "https://civitai.com/models/{model_id}?modelVersionId={version_id}"
EXPORT_LANGUAGES = {"json": "json", "diffusers": "python", "a1111": "json", "comfyui": "json"}
SESSION_KEY = "diffagent_session_id"

_agent: AgentLike | None = None
_agent_lock = threading.Lock()


def set_agent(agent: AgentLike | None) -> None:
    """Use this agent for every chat (embedding in another app, tests); None = build on demand."""
    global _agent
    with _agent_lock:
        _agent = agent


def get_agent() -> AgentLike:
    """The shared agent, built on first use from DIFFAGENT_CATALOG and DIFFAGENT_MODE."""
    global _agent
    with _agent_lock:
        if _agent is None:
            from diffagent.agent.service import AgentConfig, DiffAgent

            catalog = os.environ.get("DIFFAGENT_CATALOG")
            config = AgentConfig(
                catalog_dir=Path(catalog) if catalog else None,
                mode=os.environ.get("DIFFAGENT_MODE", "rank"),  # type: ignore[arg-type]
            )
            _agent = DiffAgent.create(config)
        return _agent


def _card_text(card: dict[str, Any]) -> str:
    lines = [
        f"{card.get('name', '?')} {card.get('version_name', '')}".strip(),
        f"{card.get('type', '?')} for {card.get('base_model', '?')}",
        CIVITAI_VERSION_URL.format(
            model_id=card.get("model_id"), version_id=card.get("version_id")
        ),
    ]
    if card.get("trigger_words"):
        lines.append("trigger words: " + ", ".join(card["trigger_words"]))
    if card.get("description"):
        lines += ["", str(card["description"])]
    return "\n".join(lines)


def render_turn(result: Any) -> tuple[str, list[cl.Element]]:
    """Markdown content plus side elements (card, parameters, exports, images) for one turn."""
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
    content = [str(data.get("reply", ""))]
    elements: list[cl.Element] = []
    why = str(data.get("why") or "")
    if why and why not in content[0]:
        content.append(f"**Why:** {why}")
    repairs = data.get("repairs") or []
    if repairs:
        content.append("**Repairs:**\n" + "\n".join(f"- {_repair_text(r)}" for r in repairs))
    if data.get("scores"):
        unified = data["scores"].get("unified")
        if unified is not None:
            content.append(f"**Unified score:** {float(unified):.3f}")
    if data.get("card"):
        elements.append(
            cl.Text(name="model card", content=_card_text(data["card"]), display="side")
        )
    if data.get("api"):
        parameters = json.dumps(data["api"], indent=2)
        elements.append(
            cl.Text(name="parameters", content=parameters, language="json", display="side")
        )
    for name, text in (data.get("exports") or {}).items():
        language = EXPORT_LANGUAGES.get(name)
        elements.append(cl.Text(name=name, content=text, language=language, display="side"))
    for number, path in enumerate(data.get("images") or [], start=1):
        elements.append(cl.Image(path=str(path), name=f"image {number}", display="inline"))
    side = [element.name for element in elements if element.display == "side"]
    if side:
        content.append("Details: " + ", ".join(side))
    return "\n\n".join(content), elements


def _repair_text(repair: Any) -> str:
    if isinstance(repair, dict) and "field" in repair:
        change = f"{repair['field']}: {repair.get('before')} -> {repair.get('after')}"
        return f"{change} ({repair['reason']})" if repair.get("reason") else change
    return str(repair)


@cl.on_chat_start
async def on_chat_start() -> None:
    """Open a fresh agent session for this chat."""
    agent = await cl.make_async(get_agent)()
    cl.user_session.set(SESSION_KEY, await cl.make_async(agent.new_session)())


@cl.on_message
async def on_message(message: cl.Message) -> cl.Message:
    """Run one agent turn for the chat's session and show the result."""
    agent = await cl.make_async(get_agent)()
    session_id = cl.user_session.get(SESSION_KEY)
    if session_id is None:
        session_id = await cl.make_async(agent.new_session)()
        cl.user_session.set(SESSION_KEY, session_id)
    text = message.content.strip()
    if not text:
        answer = cl.Message(content="Please describe the image you want.")
    else:
        try:
            result = await cl.make_async(agent.reply)(session_id, text)
        except (ValueError, UnknownSessionError) as error:
            answer = cl.Message(content=f"Sorry, I could not do that: {error}")
        else:
            content, elements = render_turn(result)
            answer = cl.Message(content=content, elements=elements)
    await answer.send()
    return answer
