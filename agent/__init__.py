"""The DiffAgent chat agent: planner backends, LangGraph state and nodes, validation and repair."""
