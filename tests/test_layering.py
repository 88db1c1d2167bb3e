"""The layering contract bites: on a copy of the package, one import that breaks a rule
fails ``lint-imports`` (the check ``make lint`` runs), and the untouched copy passes.

The copy is found first on the child's ``PYTHONPATH``, so the installed package is not
the one analysed; the contracts are the project's own, read from pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT), "--no-cache", str(root / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "src" / "lipdub", tmp_path / "src" / "lipdub",
        ignore=shutil.ignore_patterns("__pycache__", "*.npz", "static"),
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(root: Path, module: str, line: str) -> None:
    path = root / "src" / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is a dev dependency")
@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # A lower engine layer importing a higher one.
        ("lipdub.media.fit", "import lipdub.render.sync", "Engine layers in order"),
        # An engine layer importing the service.
        ("lipdub.faces.session", "import lipdub.service.store", "Engine layers in order"),
        # The store importing the HTTP layer above it.
        ("lipdub.service.store.queue", "import lipdub.service.api.views", "sub-packages"),
        # The API reaching into the worker's internals.
        ("lipdub.service.api.tasks", "import lipdub.service.worker.slots", "worker only"),
        # A cycle between two sibling modules of one layer.
        ("lipdub.service.store.db", "import lipdub.service.store.facade", "No import cycles"),
    ],
)
def test_a_bad_import_breaks_the_contract(
    copy: Path, module: str, line: str, contract: str
) -> None:
    add_import(copy, module, line)
    res = lint(copy)
    assert res.returncode != 0, res.stdout
    broken = [ln for ln in res.stdout.splitlines() if ln.endswith("BROKEN")]
    assert any(contract in ln for ln in broken), res.stdout


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is a dev dependency")
def test_the_untouched_copy_keeps_every_contract(copy: Path) -> None:
    res = lint(copy)
    assert res.returncode == 0, res.stdout + res.stderr
