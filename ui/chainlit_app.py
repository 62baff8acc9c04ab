"""Chainlit chat UI over the DiffAgent facade; one agent session per chat.

Start it with the app files kept in the package (config, welcome page), not the working directory:

    diffagent ui --host 127.0.0.1 --port 8001

The agent is built from `Settings` (DIFFAGENT_* variables: DIFFAGENT_INDEX__CATALOG_DIR picks
another catalog than the starter one, DIFFAGENT_PLANNER__MODE rank, generate or retrieval,
DIFFAGENT_GENERATION__MODEL_STORE turns on images).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import chainlit as cl
from chainlit.utils import utc_now

from diffagent.agent.service import StepCallback, TurnResult
from diffagent.errors import DiffAgentError
from diffagent.ui import chainlit_settings
from diffagent.ui.chainlit_render import (
    ANOTHER_MODEL_ACTION,
    format_seconds,
    render_turn,
    side_elements,
    step_summary,
    turn_actions,
)

__all__ = ["SESSION_KEY", "get_agent", "on_chat_start", "on_message", "render_turn", "set_agent"]

SESSION_KEY = "diffagent_session_id"
SETTINGS_KEY = "diffagent_settings"
TURNS_KEY = "diffagent_turns"
PENDING_KEY = "diffagent_pending_refinement"
LOAD_STEP = "loading the catalog index and planner"
STARTERS = [
    ("Pixel-art corgi", "a cute happy corgi, pixel art"),
    ("Lighthouse at dusk", "a lighthouse at dusk, oil painting"),
    ("Anime samurai cat", "an anime samurai cat, manga style"),
    ("Cozy cabin photo", "a cozy cabin in the snow, photorealistic"),
]


class AgentLike(Protocol):
    """The part of `diffagent.agent.service.DiffAgent` the chat UI calls."""

    def new_session(self) -> str:
        """Create a conversation and return its id."""
        ...

    def reply(
        self, session_id: str, message: str, on_step: StepCallback | None = None
    ) -> TurnResult:
        """Run one turn, reporting each graph node to `on_step`."""
        ...


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


def _generation_configured(agent: AgentLike) -> bool:
    """Whether the agent can make images (a model store is configured)."""
    config = getattr(agent, "config", None)
    return getattr(config, "generation", None) is not None


async def _load_agent() -> AgentLike:
    """The agent; its first load (index, planner) is shown as a timed step."""
    if _agent is not None:
        return _agent
    async with cl.Step(name=LOAD_STEP, type="tool") as step:
        start = time.perf_counter()
        agent = await cl.make_async(get_agent)()
        step.name = f"{LOAD_STEP} ({format_seconds(time.perf_counter() - start)})"
        step.output = "ready"
    return agent


@cl.set_starters
async def set_starters(user: Any = None, language: str | None = None) -> list[cl.Starter]:
    """Example prompts on the welcome screen."""
    return [cl.Starter(label=label, message=text) for label, text in STARTERS]


@cl.on_chat_start
async def on_chat_start() -> None:
    """Open a fresh agent session for this chat and show the settings panel."""
    agent = await _load_agent()
    cl.user_session.set(SESSION_KEY, await cl.make_async(agent.new_session)())
    cl.user_session.set(TURNS_KEY, 0)
    settings = await cl.ChatSettings(chainlit_settings.widgets()).send()
    cl.user_session.set(SETTINGS_KEY, dict(settings or chainlit_settings.DEFAULTS))


def _step_reporter(parent_id: str | None) -> StepCallback:
    """An `on_step` callback (called from the agent's thread) that shows each node as a step."""
    steps: dict[str, cl.Step] = {}

    async def started(node: str) -> None:
        step = cl.Step(name=node, type="tool", parent_id=parent_id, show_input=False)
        step.start = utc_now()
        steps[node] = step
        await step.send()

    async def ended(node: str, seconds: float, update: dict[str, Any]) -> None:
        step = steps.pop(node, None) or cl.Step(name=node, type="tool", parent_id=parent_id)
        step.name = f"{node} ({format_seconds(seconds)})"
        step.output = step_summary(node, update)
        step.end = utc_now()
        await step.update()

    def on_step(node: str, seconds: float | None, update: dict[str, Any] | None) -> None:
        if seconds is None:
            cl.run_sync(started(node))
        else:
            cl.run_sync(ended(node, seconds, update or {}))

    return on_step


async def answer(text: str) -> cl.Message:
    """Run `text` as a turn of this chat's session and show the answer, panel and actions."""
    agent = await _load_agent()
    session_id = cl.user_session.get(SESSION_KEY)
    if session_id is None:
        session_id = await cl.make_async(agent.new_session)()
        cl.user_session.set(SESSION_KEY, session_id)
    try:
        run = cl.context.current_step
        reporter = _step_reporter(run.id if run is not None else None)
        result = await cl.make_async(agent.reply)(session_id, text, on_step=reporter)
    except DiffAgentError as error:
        message = cl.Message(content=f"Sorry, I could not do that: {error}")
        await message.send()
        return message
    turns = int(cl.user_session.get(TURNS_KEY) or 0) + 1
    cl.user_session.set(TURNS_KEY, turns)
    note = not _generation_configured(agent) and not cl.user_session.get("diffagent_noted")
    content, elements = render_turn(result, note_no_weights=note)
    if note and result.api is not None:
        cl.user_session.set("diffagent_noted", True)
    message = cl.Message(content=content, elements=elements, actions=turn_actions(result))
    await message.send()
    # The side panel shows this turn only: replaced every turn, closed when there is no model.
    panel = side_elements(result, turns)
    await cl.ElementSidebar.set_elements(panel, key=f"turn-{turns}")
    if panel and result.api is not None:
        await cl.ElementSidebar.set_title(f"Turn {turns}: {result.api.model}")
    return message


@cl.on_message
async def on_message(message: cl.Message) -> cl.Message:
    """Run one agent turn for the chat's session and show the result."""
    text = message.content.strip()
    if not text:
        hint = cl.Message(content="Please describe the image you want.")
        await hint.send()
        return hint
    reply = await answer(text)
    pending = cl.user_session.get(PENDING_KEY)
    if pending:  # settings chosen before the first description apply to it now
        cl.user_session.set(PENDING_KEY, None)
        reply = await _send_refinement(pending)
    return reply


async def _send_refinement(text: str) -> cl.Message:
    """Show a refinement the UI made for the user (settings, actions) and run it."""
    await cl.Message(content=text, author="You", type="user_message").send()
    return await answer(text)


@cl.on_settings_update
async def on_settings_update(settings: dict[str, Any]) -> None:
    """Apply changed settings as the refinement a user would type; keep them for the session."""
    previous = cl.user_session.get(SETTINGS_KEY) or chainlit_settings.DEFAULTS
    cl.user_session.set(SETTINGS_KEY, dict(settings))
    text = chainlit_settings.refinement_text(previous, settings)
    if not text:
        return
    if not cl.user_session.get(TURNS_KEY):
        cl.user_session.set(PENDING_KEY, text)
        await cl.Message(content=f"Settings saved; they apply to your first image ({text}).").send()
        return
    await _send_refinement(text)


@cl.action_callback(ANOTHER_MODEL_ACTION)
async def on_another_model(action: cl.Action) -> None:
    """Try the next-ranked card: the same refinement as typing 'another model'."""
    await _send_refinement(str(action.payload.get("message") or "another model"))
