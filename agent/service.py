"""The DiffAgent facade: sessions, turns and one-shot selection over the compiled graph."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from pydantic import BaseModel, Field

from diffagent.agent.context import AgentContext, CardIndex
from diffagent.agent.conversations import open_conversations
from diffagent.agent.graph import build_graph
from diffagent.agent.sessions import SessionLocks, check_text
from diffagent.agent.settings import Settings
from diffagent.agent.streaming import TokenCallback, check_cancelled, token_sink
from diffagent.agent.understand import MAX_PROMPT_CHARS
from diffagent.agent.validate import Repair
from diffagent.api import T2IApi
from diffagent.cards import ModelCard
from diffagent.errors import UnknownSessionError
from diffagent.index.catalog import Catalog
from diffagent.tools.exports import all_exports

__all__ = [
    "DiffAgent",
    "Repair",
    "SelectResult",
    "Settings",
    "TurnResult",
    "UnknownSessionError",
    "exports_for",
]


class TurnResult(BaseModel):
    """What one chat turn produced."""

    session_id: str
    reply: str = Field(description="Markdown answer for the user.")
    api: T2IApi | None = Field(description="The validated API; None when no image was asked for.")
    card: ModelCard | None = Field(description="The chosen catalog card.")
    why: str = ""
    repairs: list[Repair] = Field(default_factory=list)
    hallucinated: bool = False
    images: list[str] = Field(default_factory=list, description="Generated image paths.")
    scores: dict[str, Any] | None = None
    exports: dict[str, str] = Field(
        default_factory=dict, description="diffusers code, A1111 and ComfyUI JSON, API JSON."
    )
    intent: str = Field(default="image", description="image, question, nsfw or empty.")
    changes: list[str] = Field(default_factory=list, description="What this message changed.")
    alternatives: list[ModelCard] = Field(
        default_factory=list, description="The next-ranked cards after the chosen one, best first."
    )
    composition: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The LoRAs composed on the checkpoint: name, weight, concept, role.",
    )
    attempts: list[dict[str, Any]] = Field(
        default_factory=list, description="This turn's generation attempts (best marked 'kept')."
    )


StepCallback = Callable[[str, float | None, dict[str, Any] | None], None]
"""`on_step(node, seconds, update)`: seconds and update are None when the node starts."""


class SelectResult(BaseModel):
    """One-shot selection for a prompt (the `diffagent select` unit)."""

    api: T2IApi | None
    card: ModelCard | None
    repairs: list[Repair] = Field(default_factory=list)
    hallucinated: bool = False
    ranking: list[int] = Field(default_factory=list, description="Version ids, best first.")
    plan_error: str | None = None
    latency_ms: float = 0.0


class DiffAgent:
    """Thread-safe chat agent over the LangGraph graph with persisted sessions.

    Turns of different sessions run concurrently; turns of one session run in order (a lock per
    session, and on PostgreSQL an advisory lock across processes). A turn is stored whole or not
    at all, in one checkpoint written when it ends: a failed, cancelled or killed turn leaves the
    conversation as it was. Shared models load once; the embedded planner serialises its own
    forward passes. Conversations live in PostgreSQL when `config.database_url` is set, else in
    SQLite (`agent/conversations.py`).
    """

    def __init__(self, config: Settings, context: AgentContext) -> None:
        self.config = config
        self.context = context
        self._lock = threading.Lock()
        self._turn_locks = SessionLocks()
        self.conversations = open_conversations(config)
        self._sessions = self.conversations.sessions
        checkpointer = self.conversations.checkpointer
        self.checkpointer = checkpointer
        self.graph = build_graph(checkpointer)
        self._select_graph = build_graph(None)
        self._owns_index = False  # set by create() when it opened the index itself

    @classmethod
    def create(
        cls,
        config: Settings | None = None,
        *,
        backend: Any = None,
        index: CardIndex | None = None,
    ) -> DiffAgent:
        """Build an agent: open the catalog's index, the planner and (if configured) the tools."""
        cfg = config or Settings()
        owns_index = index is None
        if index is None:
            from diffagent.index.search import CatalogIndex  # noqa: PLC0415

            chroma_url = cfg.index.chroma_url
            if cfg.index.catalog_dir is None:
                index = CatalogIndex.open_starter(chroma_url=chroma_url)
            else:
                index = CatalogIndex.open(
                    cfg.index.catalog_dir, cfg.index.index_dir, chroma_url=chroma_url
                )
        if backend is None and (
            cfg.planner.mode != "retrieval" or cfg.planner.understanding == "llm"
        ):
            from diffagent.agent.planner import make_backend  # noqa: PLC0415

            backend = make_backend(cfg.planner)
        generator = scorer = None
        if cfg.generation is not None:
            from diffagent.tools.generate import Generator  # noqa: PLC0415

            generator = Generator(cfg.generation)
        if cfg.scoring is not None:
            from diffagent.tools.scoring import UnifiedScorer  # noqa: PLC0415

            scorer = UnifiedScorer(cfg.scoring)
        context = AgentContext(
            catalog=index.catalog,
            index=index,
            backend=backend,
            generator=generator,
            scorer=scorer,
            settings=cfg,
        )
        agent = cls(cfg, context)
        agent._owns_index = owns_index
        return agent

    def new_session(self) -> str:
        """Create a conversation and return its id."""
        session_id = uuid.uuid4().hex
        self._sessions.add(session_id)
        return session_id

    def has_session(self, session_id: str) -> bool:
        """Whether `session_id` was created (by this or an earlier process on the same database)."""
        return session_id in self._sessions

    def reply(
        self,
        session_id: str | None,
        message: str,
        on_step: StepCallback | None = None,
        *,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
        new_id: str | None = None,
    ) -> TurnResult:
        """Run one turn of `session_id` with the user's `message`; None starts a new session.

        The turn is stored whole or not at all: when it fails, the conversation is left as it was
        (and a new session is not created). Text that is not valid Unicode is a BadInputError.
        `on_step(node, seconds, update)` is called as each graph node starts (seconds None) and
        ends (its run time and state update), for interfaces that show progress. `on_token(text)`
        receives the planner's text as it is written (generate mode, streaming backends).
        Setting `cancel` stops the turn at the next node or token (TurnCancelledError) and rolls
        it back. `new_id` is the id a new session gets (default: a random one).
        """
        text = check_text(message)
        new = session_id is None
        if session_id is None:
            session_id = new_id or uuid.uuid4().hex
        else:
            self._require(session_id)
        config = {"configurable": {"thread_id": session_id}}
        inputs = {"messages": [{"role": "user", "content": text}]}
        with self._turn_locks.hold(session_id), self.conversations.turn_lock(session_id):
            before = self.graph.get_state(config)
            try:
                state = self._run_turn(inputs, config, on_step, on_token, cancel)
                result = self._turn_result(session_id, state)
            except BaseException:
                self._roll_back(before)
                raise
            if new:
                self._sessions.add(session_id)
        return result

    def _roll_back(self, before: Any) -> None:
        """Make the checkpoint from before a failed turn the conversation's latest again."""
        if before.config["configurable"].get("checkpoint_id") is None:
            # The thread had no checkpoint: remove what the failed turn wrote.
            self.checkpointer.delete_thread(before.config["configurable"]["thread_id"])
        else:
            self.graph.update_state(before.config, None, as_node="__copy__")

    def _turn_result(self, session_id: str, state: dict[str, Any]) -> TurnResult:
        """The TurnResult of a finished turn's state."""
        api = T2IApi.model_validate(state["api"]) if state.get("api") else None
        card = self.context.catalog.get(api.version_id) if api and api.version_id else None
        return TurnResult(
            session_id=session_id,
            reply=state["reply"],
            api=api,
            card=card,
            why=state.get("why", "") if api else "",
            repairs=[Repair.model_validate(r) for r in state.get("repairs", [])],
            hallucinated=bool(state.get("hallucinated")),
            images=list(state.get("images", [])),
            scores=state.get("scores"),
            exports=exports_for(api, self.context.catalog) if api else {},
            intent=state.get("intent", "image"),
            changes=list(state.get("changes", [])),
            alternatives=self._alternatives(state, api),
            composition=list(state.get("composition") or []),
            attempts=self._turn_attempts(state),
        )

    @staticmethod
    def _turn_attempts(state: dict[str, Any]) -> list[dict[str, Any]]:
        """The attempts of the turn that just ran (the state keeps every turn's)."""
        turn = sum(1 for message in state.get("messages", []) if message["role"] == "user")
        return [a for a in state.get("attempts") or [] if a.get("turn") == turn]

    def _run_turn(
        self,
        inputs: dict[str, Any],
        config: dict[str, Any],
        on_step: StepCallback | None,
        on_token: TokenCallback | None,
        cancel: threading.Event | None,
    ) -> dict[str, Any]:
        """Run the graph node by node (reporting steps and tokens); return the final state.

        The checkpoint is written once, when the graph ends (`durability="exit"`): a process
        killed in the middle of a turn leaves no half turn behind.
        """

        def sink(piece: str) -> None:
            check_cancelled(cancel)
            if on_token is not None:
                on_token(piece)

        started: dict[str, float] = {}
        state: dict[str, Any] = {}
        listening = on_token is not None or cancel is not None
        with token_sink(sink) if listening else nullcontext():
            for mode, event in self.graph.stream(
                inputs,
                config,
                context=self.context,
                stream_mode=["tasks", "values"] if on_step is not None else ["values"],
                durability="exit",
            ):
                check_cancelled(cancel)
                if mode == "values":
                    state = event
                elif on_step is None:
                    continue
                elif "result" in event:
                    seconds = time.perf_counter() - started.pop(event["id"], time.perf_counter())
                    on_step(event["name"], seconds, dict(event["result"] or {}))
                else:
                    started[event["id"]] = time.perf_counter()
                    on_step(event["name"], None, None)
        return dict(state)

    def _alternatives(
        self, state: dict[str, Any], api: T2IApi | None, limit: int = 3
    ) -> list[ModelCard]:
        """The cards ranked after the chosen one (at most `limit`)."""
        if api is None:
            return []
        cards = [self.context.catalog.get(v) for v in state.get("ranking") or []]
        return [c for c in cards if c is not None and c.version_id != api.version_id][:limit]

    def history(self, session_id: str) -> list[dict[str, str]]:
        """The conversation so far: [{"role": "user"|"assistant", "content": str}]."""
        self._require(session_id)
        with self._turn_locks.hold(session_id):  # never half a turn
            snapshot = self.graph.get_state({"configurable": {"thread_id": session_id}})
        return [dict(m) for m in snapshot.values.get("messages", [])]

    def attempts(self, session_id: str) -> list[dict[str, Any]]:
        """Every generation attempt of the conversation, oldest first (kept across restarts)."""
        self._require(session_id)
        with self._turn_locks.hold(session_id):
            snapshot = self.graph.get_state({"configurable": {"thread_id": session_id}})
        return [dict(a) for a in snapshot.values.get("attempts", [])]

    def select(self, prompt: str, negative_prompt: str = "") -> SelectResult:
        """Choose an API for one prompt, without a conversation (batch selection, benchmarks).

        Runs the same compiled graph as a chat turn, on a throwaway in-memory thread.
        """
        start = time.perf_counter()
        request = {"prompt": prompt.strip()[:MAX_PROMPT_CHARS], "negative_prompt": negative_prompt}
        state = self._select_graph.invoke(
            {"messages": [{"role": "user", "content": request["prompt"]}], "request": request},
            {"configurable": {"thread_id": uuid.uuid4().hex}},
            context=self.context,
        )
        api = T2IApi.model_validate(state["api"]) if state.get("api") else None
        card = self.context.catalog.get(api.version_id) if api and api.version_id else None
        error = state.get("plan_error")
        if api is None:
            error = error or "empty prompt or no matching card"
        return SelectResult(
            api=api,
            card=card,
            repairs=[Repair.model_validate(r) for r in state.get("repairs", [])],
            hallucinated=bool(state.get("hallucinated")),
            ranking=list(state.get("ranking") or []),
            plan_error=error,
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    def close(self) -> None:
        """Close the conversation database and the index (when it can be closed)."""
        with self._lock:
            self.conversations.close()
            close_index = getattr(self.context.index, "close", None)
            if self._owns_index and callable(close_index):
                close_index()

    def _require(self, session_id: str) -> None:
        if not self.has_session(session_id):
            raise UnknownSessionError(f"unknown session id {session_id!r}; create one first")


def exports_for(api: T2IApi, catalog: Catalog | None = None) -> dict[str, str]:
    """Diffusers code, an A1111 payload, a ComfyUI workflow and the API JSON (text).

    With the catalog, exports name the cards' real file names.
    """
    ids = [api.version_id, *(lo.version_id for lo in api.loras)]
    if api.checkpoint is not None:
        ids.append(api.checkpoint.version_id)
    files = {}
    for version_id in ids:
        card = catalog.get(version_id) if catalog is not None and version_id else None
        if card is not None:
            files[card.version_id] = card.file.name
    return {**all_exports(api, files), "json": api.model_dump_json(indent=2)}
