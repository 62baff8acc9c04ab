"""DiffAgent as a LangChain tool, so other LangChain/LangGraph agents can bind it.

from diffagent.agent.service import DiffAgent
from diffagent.ui.langchain_tool import make_diffagent_tool

tool = make_diffagent_tool(DiffAgent.create())
model.bind_tools([tool])   # or langchain.agents.create_agent(model, tools=[tool])
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

from diffagent.agent.service import UnknownSessionError

if TYPE_CHECKING:
    from diffagent.ui.server import AgentLike

TOOL_NAME = "diffagent_recommend"
TOOL_DESCRIPTION = (
    "Pick the community Stable Diffusion model (checkpoint or LoRA) and generation parameters "
    "for an image description. Input: the image prompt, or a refinement such as 'make it square' "
    "with the session_id of an earlier call. Returns JSON with session_id, model, version_id, the "
    "full T2I API (parameters) and the agent's reply."
)


class DiffAgentToolInput(BaseModel):
    """Arguments of the DiffAgent tool."""

    prompt: str = Field(description="Image description, or a refinement of the previous one.")
    session_id: str | None = Field(
        default=None, description="Session id from an earlier call, to refine; omit to start."
    )


def tool_output(result: Any, session_id: str) -> dict[str, Any]:
    """The compact answer a calling agent needs from a turn result."""
    data = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
    api = data.get("api") or None
    return {
        "session_id": session_id,
        "model": api.get("model") if api else None,
        "version_id": api.get("version_id") if api else None,
        "api": api,
        "reply": data.get("reply", ""),
    }


def make_diffagent_tool(agent: AgentLike, *, name: str = TOOL_NAME) -> BaseTool:
    """Wrap an agent as a tool; content is JSON text, the artifact the full turn result dict."""

    def recommend(prompt: str, session_id: str | None = None) -> tuple[str, dict[str, Any]]:
        # Errors become the tool's answer (handle_tool_error), so the calling agent can recover.
        if not prompt.strip():
            raise ToolException("prompt is empty; describe the image you want")
        session = session_id or agent.new_session()
        try:
            result = agent.reply(session, prompt.strip())
        except UnknownSessionError as error:
            raise ToolException(f"unknown session_id {session!r}; omit it to start") from error
        except ValueError as error:
            raise ToolException(str(error)) from error
        full = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
        return json.dumps(tool_output(result, session)), full

    return StructuredTool.from_function(
        func=recommend,
        name=name,
        description=TOOL_DESCRIPTION,
        args_schema=DiffAgentToolInput,
        response_format="content_and_artifact",
        handle_tool_error=True,
    )
