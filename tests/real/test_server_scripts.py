"""The operators' server scripts: ``start`` leaves a server on loopback and a pid file with its
``uri``; ``stop`` ends every process it started and removes its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.scripts import REPO, load_script

pytestmark = pytest.mark.real


def _listening(pid: int) -> set[str]:
    """The addresses ``pid`` accepts TCP connections on (from /proc, IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1].split(":")[0])
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie its new parent has not reaped yet is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_documentdb_start_and_stop(tmp_path: Path) -> None:
    if not any(b.name.startswith("documentdb") for b in BACKENDS):
        pytest.skip("the DocumentDB tier does not run here (see the header)")
    if os.environ.get("CHATLEDGER_TEST_DOCUMENTDB_URI"):
        pytest.skip("a DocumentDB was given by URI; this test starts its own")
    ferretdb = load_script("ferretdb")
    pid_file = tmp_path / "documentdb.json"
    script = [sys.executable, str(REPO / "scripts" / "documentdb.py")]
    start = [*script, "start", "--pid-file", str(pid_file)]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    info = json.loads(pid_file.read_text())
    postmaster = int(Path(info["pg_dir"], "postmaster.pid").read_text().split()[0])
    try:
        assert info["uri"] == f"mongodb://127.0.0.1:{info['port']}/"
        assert ferretdb.ping(info["uri"], timeout=5)
        assert _listening(info["pid"]) == {"0100007F"}  # 127.0.0.1 only
        assert _listening(postmaster) == {"0100007F"}
    finally:
        stop = [*script, "stop", "--pid-file", str(pid_file)]
        subprocess.run(stop, check=True, capture_output=True, timeout=60)
    assert not _running(info["pid"])
    assert not _running(postmaster)
    assert not Path(info["base_dir"]).exists()
    assert not pid_file.exists()
    assert not ferretdb.ping(info["uri"], timeout=1)
