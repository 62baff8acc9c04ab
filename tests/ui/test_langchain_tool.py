"""The LangChain tool: direct calls, and another LangGraph agent that binds and calls it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from diffagent.ui.langchain_tool import TOOL_NAME, make_diffagent_tool


class ScriptedToolModel(GenericFakeChatModel):
    """A chat model that replies from a script and accepts bound tools (records their names)."""

    bound: list[str] = []

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedToolModel:
        self.bound.extend(getattr(tool, "name", str(tool)) for tool in tools)
        return self


def _call(call_id: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": TOOL_NAME, "args": args, "id": call_id}])


def test_tool_schema_and_direct_calls(agent_factory: Callable[[], Any]) -> None:
    agent = agent_factory()
    tool = make_diffagent_tool(agent)
    assert tool.name == TOOL_NAME
    assert set(tool.args) == {"prompt", "session_id"}
    first = json.loads(tool.invoke({"prompt": "a koi pond, ink wash"}))
    assert first["api"] is not None and first["model"] == first["api"]["model"]
    assert first["version_id"] == first["api"]["version_id"]
    again = json.loads(tool.invoke({"prompt": "square", "session_id": first["session_id"]}))
    assert again["session_id"] == first["session_id"]
    users = [m["content"] for m in agent.history(first["session_id"]) if m["role"] == "user"]
    assert users == ["a koi pond, ink wash", "square"]
    # Bad input comes back as the tool's answer, not an exception in the calling agent.
    assert "empty" in tool.invoke({"prompt": "  "})
    assert "unknown session_id" in tool.invoke({"prompt": "x", "session_id": "nope"})


def test_langgraph_agent_calls_the_tool(agent_factory: Callable[[], Any]) -> None:
    agent = agent_factory()
    tool = make_diffagent_tool(agent)

    def script() -> Iterator[AIMessage]:
        yield _call("call-1", prompt="a cozy cabin in snow, digital art")
        yield AIMessage("Done: I asked DiffAgent and it picked a model.")

    model = ScriptedToolModel(messages=script())
    graph = create_agent(model, tools=[tool])
    state = graph.invoke({"messages": [HumanMessage("Which SD model for a cozy cabin in snow?")]})
    assert set(model.bound) == {TOOL_NAME}  # bound on every model call
    tool_messages = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 1
    answer = json.loads(str(tool_messages[0].content))
    assert answer["api"]["model"] == answer["model"]
    assert tool_messages[0].artifact["reply"] == answer["reply"]
    users = [m["content"] for m in agent.history(answer["session_id"]) if m["role"] == "user"]
    assert users == ["a cozy cabin in snow, digital art"]
    assert state["messages"][-1].content.startswith("Done")
