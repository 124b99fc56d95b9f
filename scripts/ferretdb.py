#!/usr/bin/env python3
"""Build, start and stop a throw-away FerretDB v1.24.2 (SQLite back end) on 127.0.0.1.

Used as a module (tests import it by path, ``scripts/`` is not a package) and as a CLI::

    python scripts/ferretdb.py build [--force]
    python scripts/ferretdb.py start [--pid-file PATH]     # prints the URI and the pid file
    python scripts/ferretdb.py stop [--pid-file PATH]
    python scripts/ferretdb.py run -- CMD ARGS...           # exports CHATLEDGER_TEST_FERRETDB_URI

Network rules: the server listens on 127.0.0.1 only, telemetry is disabled by flag and by
``DO_NOT_TRACK=1``, the debug/metrics HTTP listener is disabled (``--debug-addr=-``) and the
telemetry URL points at a closed loopback port, so nothing can leave the machine.

Why the build is not a plain ``go install``: FerretDB's ``build/version`` package panics at
start-up unless ``build/version/version.txt`` is embedded, and that file is not part of the
module zip on the Go proxy. We therefore copy the pinned module source into ``.cache/``, add
``version.txt`` and build through a generated ``go.work`` that replaces the module with that
copy. ``tools/ferretdb/go.mod`` (the version pin) is left untouched.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
URI_ENV = "CHATLEDGER_TEST_FERRETDB_URI"
HOST = "127.0.0.1"

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- binary


def binary_path(repo_root: Path) -> Path:
    """Where the cached FerretDB binary lives."""
    return Path(repo_root).resolve() / ".cache" / "bin" / "ferretdb"


def binary_version(binary: Path) -> str | None:
    """Return the version a FerretDB binary reports, or None if it does not run cleanly."""
    try:
        out = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "DO_NOT_TRACK": "1"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    return None


def _go_env(go: str, key: str, cwd: Path) -> str:
    out = subprocess.run([go, "env", key], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _run_go(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(args)}` failed in {cwd} (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def _build(repo_root: Path, binary: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(
            "FerretDB is not built and the `go` toolchain is not on PATH; install Go >= 1.24 "
            f"(or put a working ferretdb {FERRETDB_VERSION} binary at {binary})"
        )
    tool_dir = repo_root / "tools" / "ferretdb"
    go_mod = (tool_dir / "go.mod").read_text()
    if f"{FERRETDB_MODULE} {FERRETDB_VERSION}" not in go_mod:
        raise RuntimeError(f"{tool_dir / 'go.mod'} does not pin {FERRETDB_MODULE} {FERRETDB_VERSION}")

    cache = repo_root / ".cache"
    env = {**os.environ, "GOWORK": "off", "GOFLAGS": "-mod=readonly"}
    # Fetch (or find in the module cache) the pinned source.
    info = json.loads(
        _run_go([go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"], tool_dir, env)
    )
    src_dir = Path(info["Dir"])

    # Writable copy with the version file FerretDB needs.
    copy = cache / f"ferretdb-src-{FERRETDB_VERSION}"
    if copy.exists():
        shutil.rmtree(copy, onerror=_make_writable_and_retry)
    shutil.copytree(src_dir, copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    (copy / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")

    work = cache / "ferretdb.go.work"
    work.write_text(f"go 1.24\n\nuse {tool_dir}\n\nreplace {FERRETDB_MODULE} {FERRETDB_VERSION} => {copy}\n")
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOWORK": str(work), "GOBIN": str(binary.parent), "GOFLAGS": ""}
    _run_go([go, "install", "-buildvcs=false", f"{FERRETDB_MODULE}/cmd/ferretdb"], tool_dir, env)


def _make_writable_and_retry(func: Any, path: str, _exc: Any) -> None:
    os.chmod(path, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
    func(path)


def ensure_binary(repo_root: Path = REPO_ROOT, *, force: bool = False) -> Path:
    """Return the cached FerretDB binary, building it first if it is missing or broken.

    A binary that exists and reports the pinned version is reused (no rebuild). Builds are
    serialised with a file lock so parallel test workers do not race.

    Raises:
        RuntimeError: ``go`` is missing, or the build failed, or the result does not run.
    """
    repo_root = Path(repo_root).resolve()
    binary = binary_path(repo_root)
    if not force and binary_version(binary) == FERRETDB_VERSION:
        return binary
    lock_path = repo_root / ".cache" / "ferretdb-build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or binary_version(binary) != FERRETDB_VERSION:
            _build(repo_root, binary)
        version = binary_version(binary)
        if version != FERRETDB_VERSION:
            raise RuntimeError(f"built {binary} but it reports version {version!r}, not {FERRETDB_VERSION}")
    return binary


# --------------------------------------------------------------------------- server


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR like Go's net.Listen: connections in TIME_WAIT do not block a restart.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def ping(uri: str, timeout: float = 1.0) -> bool:
    """Return True if a server at ``uri`` answers ``ping`` within ``timeout`` seconds."""
    # Imported here so that `build` works without pymongo installed.
    import pymongo
    from pymongo.errors import PyMongoError

    ms = max(1, int(timeout * 1000))
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms, directConnection=True
    )
    try:
        client.admin.command("ping")
    except PyMongoError:
        return False
    finally:
        client.close()
    return True


def _finalize(procs: list[subprocess.Popen[bytes]], base_dir: str | None) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if base_dir is not None:
        shutil.rmtree(base_dir, ignore_errors=True)


class FerretDBServer:
    """A FerretDB process on 127.0.0.1 with its data in a throw-away directory.

    ``stop()`` ends the process but keeps the data, so ``start()``/``restart()`` come back on
    the same data (and the same port when it is still free). ``close()`` (and leaving the
    ``with`` block) stops it and removes the directory, unless ``keep=True`` or the directory
    was passed in. As a safety net, a server that is garbage-collected or still running at
    interpreter exit is killed and its owned directory removed (not for ``detach=True``).
    """

    def __init__(
        self,
        binary: Path | None = None,
        *,
        repo_root: Path = REPO_ROOT,
        base_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        log_level: str = "INFO",
        keep: bool = False,
        detach: bool = False,
    ) -> None:
        self.binary = Path(binary) if binary is not None else ensure_binary(repo_root)
        self._owns_dir = base_dir is None
        self.base_dir = (
            Path(base_dir).resolve()
            if base_dir is not None
            else Path(tempfile.mkdtemp(prefix="chatledger-ferretdb-"))
        )
        self.data_dir = self.base_dir / "data"
        self.state_dir = self.base_dir / "state"
        self.log_path = self.base_dir / "ferretdb.log"
        self.port = port if port is not None else free_port()
        self._fixed_port = port is not None
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.keep = keep
        self.detach = detach
        self.proc: subprocess.Popen[bytes] | None = None
        # Safety net for callers that only call stop() or nothing at all: at garbage collection or
        # interpreter exit, kill what we spawned (unless detached) and remove the owned directory.
        self._spawned: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(
            self,
            _finalize,
            [] if detach else self._spawned,
            str(self.base_dir) if self._owns_dir and not keep else None,
        )

    # -- info

    @property
    def uri(self) -> str:
        """Connection string; FerretDB 1.x with SQLite needs no authentication."""
        return f"mongodb://{HOST}:{self.port}/"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, if any."""
        return self.proc.pid if self.proc is not None else None

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        """The exact command line used to start the server."""
        return [
            str(self.binary),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir}/",
            f"--state-dir={self.state_dir}",
            f"--listen-addr={HOST}:{self.port}",
            "--listen-unix=",
            "--listen-tls=",
            "--debug-addr=-",
            "--telemetry=disable",
            # Belt and braces: even if reporting were ever enabled it would hit a closed local port.
            f"--test-telemetry-url=http://{HOST}:9/",
            f"--log-level={self.log_level}",
            "--log-format=text",
        ]

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the server log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle

    def start(self) -> FerretDBServer:
        """Start the server and wait until it answers ``ping``."""
        if self.is_running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if attempt or not _port_is_free(self.port):
                if self._fixed_port:
                    raise RuntimeError(f"port {HOST}:{self.port} is already in use")
                self.port = free_port()
            if self._spawn_and_wait():
                return self
        raise RuntimeError(f"FerretDB did not start after {attempts} tries; log tail:\n{self.log_tail()}")

    def _spawn_and_wait(self) -> bool:
        env = {**os.environ, "DO_NOT_TRACK": "1"}
        with self.log_path.open("ab") as log:
            log.write(f"\n=== chatledger: starting {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.base_dir,
                start_new_session=self.detach,
            )
        self._spawned[:] = [self.proc]
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                if "address already in use" in self.log_tail(10) and not self._fixed_port:
                    return False
                raise RuntimeError(
                    f"FerretDB exited with code {code} during start-up; log tail:\n{self.log_tail()}"
                )
            if ping(self.uri, timeout=0.5):
                return True
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(
            f"FerretDB did not answer ping on {self.uri} within {self.startup_timeout:.0f}s; "
            f"log tail:\n{self.log_tail()}"
        )

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait, then SIGKILL after ``timeout``; keeps the data. Returns the exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()

    def kill(self) -> None:
        """SIGKILL the server at once (a crash: no shutdown, no cleanup); keeps the data."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def restart(self) -> FerretDBServer:
        """Stop (if running) and start again on the same data, on the same port if it is free."""
        self.stop()
        deadline = time.monotonic() + 5
        while not _port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its directory (unless kept or passed in)."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> FerretDBServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FerretDBServer(uri={self.uri!r}, pid={self.pid}, base_dir={str(self.base_dir)!r})"


# --------------------------------------------------------------------------- CLI


def default_pid_file(repo_root: Path = REPO_ROOT) -> Path:
    """Where ``start`` records the server it left running."""
    return repo_root / ".cache" / "ferretdb" / "ferretdb.pid.json"


def _is_ferretdb(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"ferretdb" in cmdline.split(b"\0", 1)[0]


def _cmd_build(args: argparse.Namespace) -> int:
    print(ensure_binary(REPO_ROOT, force=args.force))
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    pid_file: Path = args.pid_file
    if pid_file.exists():
        old = json.loads(pid_file.read_text())
        if _is_ferretdb(int(old["pid"])):
            print(f"already running: {old['uri']} (pid {old['pid']}, pid file {pid_file})", file=sys.stderr)
            return 1
    server = FerretDBServer(port=args.port, keep=True, detach=True)
    try:
        server.start()
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": server.pid,
            "port": server.port,
            "uri": server.uri,
            "base_dir": str(server.base_dir),
            "log": str(server.log_path),
        }
        pid_file.write_text(json.dumps(info, indent=2) + "\n")
    except BaseException:
        # Detached, the server would outlive us with no pid file naming it (an orphan
        # nobody can stop): whatever failed after it started (the pid file, Ctrl-C while
        # waiting for it), it goes, with its throw-away data.
        server.kill()
        shutil.rmtree(server.base_dir, ignore_errors=True)
        raise
    print(f"{URI_ENV}={server.uri}")
    print(f"pid file: {pid_file}")
    print(f"log: {server.log_path}")
    return 0


def stop_recorded(pid_file: Path, is_server: Callable[[int], bool], timeout: float) -> dict[str, Any] | None:
    """Stop the server a pid file records (SIGTERM, SIGKILL after ``timeout``); return the record.

    ``None`` (and a message) when there is no pid file. ``is_server`` tells whether the pid
    still belongs to the server, so a recycled pid is never signalled.
    """
    if not pid_file.exists():
        print(f"no pid file at {pid_file}", file=sys.stderr)
        return None
    info: dict[str, Any] = json.loads(pid_file.read_text())
    pid = int(info["pid"])
    if is_server(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while is_server(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_server(pid):
            os.kill(pid, signal.SIGKILL)
        print(f"stopped pid {pid}")
    else:
        print(f"pid {pid} is not running (stale pid file)", file=sys.stderr)
    return info


def _cmd_stop(args: argparse.Namespace) -> int:
    pid_file: Path = args.pid_file
    info = stop_recorded(pid_file, _is_ferretdb, args.timeout)
    if info is None:
        return 1
    if not args.keep_data:
        shutil.rmtree(info["base_dir"], ignore_errors=True)
    pid_file.unlink()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("run: no command given (usage: run -- CMD ARGS...)", file=sys.stderr)
        return 2
    with FerretDBServer(port=args.port, keep=args.keep_data) as server:
        print(f"ferretdb: {server.uri} (pid {server.pid}, log {server.log_path})", file=sys.stderr)
        env = {**os.environ, URI_ENV: server.uri}
        code = subprocess.call(cmd, env=env)
    return code if code >= 0 else 128 - code


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build the cached binary if missing or broken; print its path")
    p.add_argument("--force", action="store_true", help="rebuild even if a working binary exists")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("start", help="start a detached server; print its URI and pid file")
    p.add_argument("--pid-file", type=Path, default=default_pid_file())
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=_cmd_start)

    p = sub.add_parser("stop", help="stop the server recorded in the pid file and remove its data")
    p.add_argument("--pid-file", type=Path, default=default_pid_file())
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--keep-data", action="store_true")
    p.set_defaults(func=_cmd_stop)

    p = sub.add_parser("run", help=f"run CMD with {URI_ENV} set to a fresh server, then stop it")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--keep-data", action="store_true")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_run)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
