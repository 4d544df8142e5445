"""The layering is enforced: import-linter's contracts (pyproject.toml) hold, and breaking one fails.

The README's "Architecture" section names the layers; `lint-imports` checks every import of every
package against them: no cycle between top-level packages, no I/O library in the contracts or the
dispatcher's core, the console never reading the dispatcher's storage or service, and within the
dispatcher the entry point above the service layer above the adapters, the read model and the core.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("contracts", "infra", "streams", "dispatcher", "console", "devtools", "bench")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_the_import_contracts_hold() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages and the contracts, to break one at a time."""
    root = tmp_path_factory.mktemp("house")
    for package in PACKAGES:
        skip = shutil.ignore_patterns("static", "__pycache__")
        shutil.copytree(ROOT / package, root / package, ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    clean = _lint(root)
    assert clean.returncode == 0, clean.stdout  # so that each break below is the only one
    return root


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a cycle between top-level packages: the shared adapters reaching up into a service
        ("infra/scratch_cycle.py", "from dispatcher.core import lifecycle", "Layers"),
        # the contracts reaching up into a service
        ("contracts/scratch_up.py", "import streams.normalise", "Layers"),
        # one service importing another
        ("streams/scratch_sideways.py", "from dispatcher.adapters import store", "Layers"),
        # an I/O library in the pure core
        ("dispatcher/core/scratch_io.py", "import asyncpg", "do no I/O"),
        ("contracts/scratch_io.py", "import redis.asyncio", "do no I/O"),
        # the console reading the dispatcher's storage or service
        ("console/scratch_internals.py", "from dispatcher.adapters import casestore", "console reads"),
        ("console/scratch_service.py", "import dispatcher.service", "console reads"),
        # the read model reaching into the writer, the core into its adapters
        ("dispatcher/readmodel/scratch_w.py", "from dispatcher.adapters import store", "The dispatcher:"),
        ("dispatcher/core/scratch_adapter.py", "from dispatcher.readmodel import views", "The dispatcher:"),
    ],
)
def test_breaking_a_contract_fails(scratch: Path, module: str, line: str, broken: str) -> None:
    path = scratch / module
    path.write_text(f'"""A scratch module that breaks a layer."""\n\n{line}\n', encoding="utf-8")
    try:
        done = _lint(scratch)
    finally:
        path.unlink()
    assert done.returncode != 0, f"{module} ({line}) broke nothing:\n{done.stdout}"
    broken_part = done.stdout.split("Broken contracts")[-1]
    assert broken in broken_part, done.stdout
