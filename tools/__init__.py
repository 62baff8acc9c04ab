"""Agent tools: the T2I API schema and exports, diffusers generation, preference scoring."""
