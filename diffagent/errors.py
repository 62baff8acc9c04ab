"""Typed errors, mapped once at each boundary (REST status, CLI exit code 2 with one line)."""

from __future__ import annotations


class DiffAgentError(Exception):
    """Base of the errors DiffAgent raises on purpose; the message is one clear line."""

    status = 500
    """HTTP status the REST server answers with."""


class BadInputError(DiffAgentError, ValueError):
    """The caller's input is wrong (empty prompt, unknown filter, bad parameter)."""

    status = 400


class UnknownSessionError(DiffAgentError, LookupError):
    """A session id that was never created by this agent's database."""

    status = 404


class CatalogMissingError(DiffAgentError, FileNotFoundError):
    """The configured catalog or its index is not there."""

    status = 500


class WeightsMissingError(DiffAgentError, FileNotFoundError):
    """Model or scorer weights that generation or scoring needs are not on disk."""

    status = 500


class PlannerError(DiffAgentError, RuntimeError):
    """The planner LLM (embedded or behind an endpoint) failed to answer."""

    status = 502
