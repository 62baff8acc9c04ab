"""Check the import-linter contracts of pyproject.toml on the `diffagent.*` namespace.

The namespace maps top-level folders onto `diffagent.*` (pyproject `package-dir`), which
import-linter cannot walk; this copies the sources into one temporary `diffagent/` tree and
runs import-linter on it, with the editable install's finder left out (`python -S`).

    .venv/bin/python .ci/lint_imports.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "diffagent": "",
    "index": "index",
    "tools": "tools",
    "agent": "agent",
    "finetune": "finetune",
    "ui": "ui",
}


def main() -> int:
    """Copy the namespace into a temporary tree and run lint-imports there."""
    with tempfile.TemporaryDirectory(prefix="diffagent-lint-") as scratch:
        package = Path(scratch) / "diffagent"
        for folder, target in FOLDERS.items():
            for source in (ROOT / folder).rglob("*.py"):
                relative = source.relative_to(ROOT / folder)
                if folder == "diffagent" and len(relative.parts) > 1:
                    continue
                destination = package / target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)
        site = sysconfig.get_paths()["purelib"]
        code = (
            "import sys; from importlinter.cli import lint_imports_command; "
            f"sys.argv = ['lint-imports', {str(ROOT / 'pyproject.toml')!r}]; lint_imports_command()"
        )
        env = {"PYTHONPATH": f"{scratch}:{site}", "PATH": "/usr/bin:/bin"}
        return subprocess.call([sys.executable, "-S", "-c", code], cwd=scratch, env=env)


if __name__ == "__main__":
    sys.exit(main())
