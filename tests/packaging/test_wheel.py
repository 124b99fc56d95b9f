"""The product as a PyPI user gets it: the built wheel, installed into a fresh virtualenv.

Slow (it builds a wheel and two virtualenvs); dependencies come from a wheelhouse in
``.cache/wheelhouse`` filled from PyPI on the first run, so later runs install offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / ".cache" / "wheelhouse"

pytestmark = pytest.mark.slow


def _run(*argv: str | Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATLEDGER_", "PYTHONPATH"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-2000:])
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, REPO)
    (built,) = out.glob("chatledger-*.whl")
    return built


def _venv_with(wheel: Path, where: Path, extras: str = "") -> Path:
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    target = f"chatledger{extras} @ {wheel.as_uri()}"
    offline = [python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", WHEELHOUSE, target]
    if _run(*offline, check=False).returncode != 0:
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        _run(python, "-m", "pip", "download", "--quiet", "--dest", WHEELHOUSE, target)
        _run(*offline)
    return python


def _site_size(python: Path) -> int:
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    return sum(f.stat().st_size for f in Path(site).rglob("*") if f.is_file())


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "chatledger/py.typed" in names
    assert "chatledger/cli/commands/removal.py" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Provides-Extra: cli" in text
    assert "Requires-Dist: typer" in text  # only as an extra:
    assert not any(
        line.startswith("Requires-Dist: typer") and "extra ==" not in line for line in text.splitlines()
    )


def test_core_install_is_lean_and_says_how_to_get_the_cli(wheel: Path, tmp_path: Path) -> None:
    python = _venv_with(wheel, tmp_path / "core")
    probe = (
        "import sys, time; t = time.perf_counter(); import chatledger; "
        "print(time.perf_counter() - t); "
        "heavy = ('typer', 'rich', 'mongomock', 'mongomock_motor', 'motor'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    seconds, heavy = _run(python, "-c", probe).stdout.splitlines()
    assert heavy == "[]"
    done = _run(tmp_path / "core" / "bin" / "chatledger", "--version", check=False)
    assert done.returncode == 2
    assert "pip install 'chatledger[cli]'" in done.stderr
    assert "Traceback" not in done.stderr
    packages = json.loads(_run(python, "-m", "pip", "list", "--format", "json").stdout)
    _record("core", _site_size(python), len(packages), float(seconds))


def test_cli_install_runs(wheel: Path, tmp_path: Path) -> None:
    python = _venv_with(wheel, tmp_path / "cli", "[cli]")
    from chatledger import __version__

    done = _run(tmp_path / "cli" / "bin" / "chatledger", "--version")
    assert done.stdout.strip() == f"chatledger {__version__}"
    # No embedded database without the demo extra: a clear message, exit status 2.
    demo = _run(tmp_path / "cli" / "bin" / "chatledger", "demo", check=False)
    assert demo.returncode == 2
    assert "chatledger[demo]" in demo.stderr
    assert "Traceback" not in demo.stderr
    packages = json.loads(_run(python, "-m", "pip", "list", "--format", "json").stdout)
    _record("cli", _site_size(python), len(packages), None)


def _record(name: str, size: int, packages: int, import_seconds: float | None) -> None:
    # Kept for the release notes (install size and import time); not asserted beyond the above.
    path = REPO / ".cache" / "packaging-measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {"site_packages_mb": round(size / 1e6, 1), "packages": packages, "import_s": import_seconds}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
