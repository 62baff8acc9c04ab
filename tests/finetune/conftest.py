"""Fixtures of the finetune tests (training fixtures live in train_fixtures.py)."""

from .train_fixtures import catalog, catalog_dir, tiny_planner  # noqa: F401
