"""Chainlit chat UI over the DiffAgent facade; one agent session per chat.

The agent is built from `Settings` (DIFFAGENT_* variables: DIFFAGENT_INDEX__CATALOG_DIR picks
another catalog than the starter one, DIFFAGENT_PLANNER__MODE rank, generate or retrieval,
DIFFAGENT_GENERATION__MODEL_STORE turns on images):

    chainlit run ui/chainlit_app.py --host 127.0.0.1 --port 8001
    DIFFAGENT_INDEX__CATALOG_DIR=/tmp/catalog-full chainlit run "$(python -c \
        'import diffagent.ui.chainlit_app as m; print(m.__file__)')"
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import chainlit as cl

from diffagent.agent.service import TurnResult
from diffagent.errors import DiffAgentError

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
    """The shared agent, built on first use from the DIFFAGENT_* settings."""
    global _agent
    with _agent_lock:
        if _agent is None:
            from diffagent.agent.service import DiffAgent, Settings

            _agent = DiffAgent.create(Settings())
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


def render_turn(result: TurnResult) -> tuple[str, list[cl.Element]]:
    """The turn's reply (rendered once, by the agent) plus side panels built from the result."""
    elements: list[cl.Element] = []
    if result.card is not None:
        card = result.card.model_dump(mode="json")
        elements.append(cl.Text(name="model card", content=_card_text(card), display="side"))
    if result.api is not None:
        parameters = json.dumps(result.api.model_dump(mode="json"), indent=2, ensure_ascii=False)
        elements.append(
            cl.Text(name="parameters", content=parameters, language="json", display="side")
        )
    for name, text in result.exports.items():
        language = EXPORT_LANGUAGES.get(name)
        elements.append(cl.Text(name=name, content=text, language=language, display="side"))
    for number, path in enumerate(result.images, start=1):
        elements.append(cl.Image(path=str(path), name=f"image {number}", display="inline"))
    content = [result.reply]
    side = [element.name for element in elements if element.display == "side"]
    if side:
        content.append("Details: " + ", ".join(side))
    return "\n\n".join(content), elements


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
        except DiffAgentError as error:
            answer = cl.Message(content=f"Sorry, I could not do that: {error}")
        else:
            content, elements = render_turn(result)
            answer = cl.Message(content=content, elements=elements)
    await answer.send()
    return answer
