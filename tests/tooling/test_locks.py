"""The Python dependencies are locked with hashes and installed from the lock, loudly.

A fresh machine next month must get the stack the suite passed on: `./centre`, CI and the
Dockerfile install exact versions with their hashes (`pip --require-hashes`), and an install that
fails stops the command with a message instead of surfacing later as an import error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DEV_LOCK = ROOT / "requirements-dev.lock"
RUNTIME_LOCK = ROOT / "requirements.lock"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def _pins(lock: Path) -> dict[str, str]:
    """Package name → pinned version; asserts every entry is pinned exactly and hashed."""
    pins: dict[str, str] = {}
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8"))
    for entry in entries:
        if not entry.strip() or entry.startswith("#"):
            continue
        match = _PIN.match(entry)
        assert match, f"{lock.name}: not an exact pin: {entry.splitlines()[0]!r}"
        assert "--hash=sha256:" in entry, f"{lock.name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _declared(*groups: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for group in groups:
        reqs += [Requirement(r) for r in project["optional-dependencies"][group]]
    reqs += [Requirement(r) for r in PYPROJECT["dependency-groups"]["build"]]
    return reqs


def _assert_satisfies(lock: Path, reqs: list[Requirement]) -> None:
    pins = _pins(lock)
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock.name} lacks {req.name} (pyproject.toml asks for it): ./centre lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{lock.name}: {req.name}=={pins[name]} is outside {req.specifier} (pyproject.toml)"
        )


def test_the_dev_lock_holds_every_declared_package_hashed() -> None:
    _assert_satisfies(DEV_LOCK, _declared("dev"))


def test_the_runtime_lock_holds_the_runtime_and_takes_the_dev_locks_pins() -> None:
    _assert_satisfies(RUNTIME_LOCK, _declared())
    runtime, dev = _pins(RUNTIME_LOCK), _pins(DEV_LOCK)
    for name, version in runtime.items():
        assert dev.get(name) == version, f"{name}: {version} in requirements.lock, {dev.get(name)} in dev"
    for tool in ("pytest", "hypothesis", "mypy", "ruff", "playwright", "schemathesis", "import-linter", "uv"):
        assert tool not in runtime, f"{tool}, a development tool, is in the image's lock"


def test_centre_installs_from_the_lock_and_swallows_no_failure() -> None:
    script = (ROOT / "centre").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements-dev.lock" in script
    for line in script.splitlines():
        if re.search(r"\b(pip|pip_quiet|apt-get|npm)\b", line):
            assert "|| true" not in line, f"a failed install must stop ./centre with a message: {line}"
    assert "--no-deps --no-build-isolation -e ." in script


def test_the_image_installs_from_the_runtime_lock() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install --require-hashes -r requirements.lock" in text
    assert "pip install --no-deps --no-build-isolation ." in text


def test_a_failed_install_stops_centre_with_a_message(tmp_path: Path) -> None:
    """A lock that cannot be installed stops `./centre` at once, naming the step (not `|| true`)."""
    shutil.copy(ROOT / "centre", tmp_path / "centre")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "requirements-dev.lock").write_text(
        "street-centre-no-such-package==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    done = subprocess.run(
        ["bash", str(tmp_path / "centre"), "tail", "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "installing the locked Python packages failed" in out, out
    assert not (tmp_path / ".venv" / ".installed").exists()
