"""The agent graph (wiring only): understand, retrieve, plan, validate, compose, images, respond."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph

from diffagent.agent import critique, nodes
from diffagent.agent.context import AgentContext
from diffagent.agent.state import InputState, State


def build_graph(checkpointer: Any = None) -> Any:
    """Compile the graph; `checkpointer` persists conversations (a LangGraph saver, or None)."""
    builder = StateGraph(State, context_schema=AgentContext, input_schema=InputState)
    builder.add_node("understand", nodes.understand_node)
    builder.add_node("retrieve", nodes.retrieve_node)
    builder.add_node("plan", nodes.plan_node)
    builder.add_node("validate", nodes.validate_node)
    builder.add_node("generate", nodes.generate_node)
    builder.add_node("compose", nodes.compose_node)
    builder.add_node("score", nodes.score_node)
    builder.add_node("critique", critique.critique_node)
    builder.add_node("respond", nodes.respond_node)
    builder.add_edge(START, "understand")
    builder.add_conditional_edges(
        "understand", nodes.route_after_understand, ["respond", "retrieve", "plan"]
    )
    builder.add_edge("retrieve", "plan")
    builder.add_edge("plan", "validate")
    builder.add_edge("validate", "compose")
    builder.add_conditional_edges(
        "compose", nodes.route_after_compose, ["generate", "critique", "respond"]
    )
    builder.add_conditional_edges(
        "generate", nodes.route_after_generate, ["score", "critique", "respond"]
    )
    builder.add_edge("score", "critique")
    builder.add_edge("critique", "respond")
    builder.add_edge("respond", END)
    return builder.compile(checkpointer=checkpointer, name="DiffAgent")


graph = build_graph()
"""The graph without a checkpointer (LangGraph Studio / `langgraph dev` style export)."""
