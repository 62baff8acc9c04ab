"""DiffAgent: picks the SD model and parameters for a prompt, generates, scores and refines."""

__version__ = "0.1.0"
