"""Tiny random-weight makers in the official formats, for tests and demos (no downloads)."""
