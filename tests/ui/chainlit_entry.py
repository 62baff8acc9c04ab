"""What the browser test runs with `chainlit run`: the real app, a small catalog, scripted planner.

Chainlit loads this file outside any package, so the shared fakes are loaded by path. The agent
is built from the DIFFAGENT_* environment the test sets (catalog directory, conversation db).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from diffagent.agent.service import DiffAgent, Settings
from diffagent.index.catalog import Catalog
from diffagent.ui import chainlit_app


def _load_fakes():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(
        "diffagent_test_fakes", Path(__file__).parents[1] / "fakes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


_fakes = _load_fakes()
_settings = Settings()
assert _settings.index.catalog_dir is not None, "set DIFFAGENT_INDEX__CATALOG_DIR"
chainlit_app.set_agent(
    DiffAgent.create(
        _settings,
        backend=_fakes.ScriptedPlanner(),
        index=_fakes.FakeIndex(Catalog.load(_settings.index.catalog_dir)),
    )
)
