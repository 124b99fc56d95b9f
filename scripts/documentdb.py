#!/usr/bin/env python3
"""Build, start and stop a throw-away DocumentDB (PostgreSQL 15 + FerretDB v2.7.0) on 127.0.0.1.

DocumentDB is the PostgreSQL extension behind FerretDB v2 and Azure Cosmos DB for MongoDB
(vCore); unlike FerretDB v1 it has real indexes, so hints, index scans and missing indexes
behave as on MongoDB. Used as a module (tests import it by path) and as a CLI::

    python scripts/documentdb.py build [--force]     # root + Debian 12: apt packages, make install
    python scripts/documentdb.py start [--pid-file PATH]
    python scripts/documentdb.py stop [--pid-file PATH]

``build`` installs the Debian packages (PostgreSQL 15 and build dependencies), builds
pgvector, pg_cron and DocumentDB from ``vendor/documentdb/`` (checked against their
sha256) and installs them into the system's PostgreSQL 15 (``make install``), and installs
FerretDB v2.7.0 from the Go module proxy into ``.cache/documentdb/bin``. Stamps (next to the
installed extensions, and in the built tree kept in ``.cache/documentdb/src``) make a second
``build`` a no-op, and ``make install`` the only step on a fresh machine with ``.cache`` cached.

``start`` runs a throw-away cluster (``initdb`` in a temporary directory, as the
``postgres`` user when run as root) and FerretDB v2 in front of it. The default
``15/main`` cluster is never touched. Network rules: PostgreSQL and FerretDB listen on
127.0.0.1 only (PostgreSQL's socket lives in the temporary directory), FerretDB runs with
``--telemetry=disable`` and ``DO_NOT_TRACK=1``, its debug listener on an ephemeral
loopback port.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
VENDOR: Final = REPO_ROOT / "vendor" / "documentdb"
URI_ENV: Final = "CHATLEDGER_TEST_DOCUMENTDB_URI"
HOST: Final = "127.0.0.1"
PG_VERSION: Final = "15"
PG_BIN: Final = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
PG_SHARE: Final = Path(f"/usr/share/postgresql/{PG_VERSION}/extension")
FERRETDB_V2_MODULE: Final = "github.com/FerretDB/FerretDB/v2/cmd/ferretdb"
FERRETDB_V2_VERSION: Final = "v2.7.0"

#: The sources, checked before they are built: (file, sha256, folder it unpacks into).
SOURCES: Final = {
    "pgvector": (
        "pgvector-0.8.0.tar.gz",
        "93df40ccdaaaa267d1275c1e6e773004a0e5ff8e14227934a4ec7e8205d0f608",
        "pgvector-0.8.0",
    ),
    "pg_cron": (
        "pg_cron-1.6.3.tar.gz",
        "3580f4034021e62e459f9f7ab1f625774bfc534a9256844545da85d6f99c2f5b",
        "pg_cron-1.6.3",
    ),
    # Unpacks without a top folder.
    "documentdb": (
        "documentdb-b2e220c4.tar.gz",
        "3aaeaebbe5b4b80ef457669907b59009141e0443d9575b3a9ce5b98fe40ecc26",
        "",
    ),
}
#: Not postgresql-15-cron: bookworm's pg_cron 1.4.2 rejects DocumentDB's "2 seconds" schedules.
PACKAGES: Final = (
    "postgresql-15",
    "postgresql-server-dev-15",
    "postgresql-15-rum",
    "postgresql-15-postgis-3",
    "libbson-dev",
    "libintelrdfpmath-dev",
    "libpcre2-dev",
    "libkrb5-dev",
    "libicu-dev",
    "libpq-dev",
    "systemtap-sdt-dev",
    "pkg-config",
    "build-essential",
)
#: Extension control files ``make install`` leaves behind; all present = the system part is built.
CONTROL_FILES: Final = (
    "vector.control",
    "pg_cron.control",
    "documentdb.control",
    "documentdb_extended_rum.control",
)
#: bookworm ships libbson 1.23; DocumentDB expects 1.28 (one constant and one switch warning).
COPT: Final = "-DBSON_SUBTYPE_SENSITIVE=0x08 -Wno-error=switch"
PRELOAD: Final = "pg_cron, pg_documentdb_core, pg_documentdb, pg_documentdb_extended_rum"


def psql(pg_port: int, *statements: str) -> list[str]:
    """The ``psql`` command running ``statements`` as ``postgres`` on a cluster of ours (loopback)."""
    args = [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(pg_port)]
    args += ["-U", "postgres", "-d", "postgres"]
    for statement in statements:
        args += ["-c", statement]
    return args


def _ferretdb_module() -> Any:
    """scripts/ferretdb.py (port and ping helpers), imported by path: scripts/ is not a package."""
    name = "chatledger_scripts_ferretdb"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("ferretdb.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# --------------------------------------------------------------------------- build


def cache_dir(repo_root: Path = REPO_ROOT) -> Path:
    """Where the build keeps its sources, stamp and the FerretDB v2 binary."""
    return Path(repo_root).resolve() / ".cache" / "documentdb"


def gateway_path(repo_root: Path = REPO_ROOT) -> Path:
    """The cached FerretDB v2 binary."""
    return cache_dir(repo_root) / "bin" / "ferretdb"


def unsupported_reason() -> str | None:
    """Why this machine cannot build the tier (``None``: it can: root on Debian 12 with Go)."""
    try:
        release = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        )
    except OSError:
        release = {}
    if release.get("ID") != "debian" or release.get("VERSION_ID", "").strip('"') != "12":
        return "not Debian 12 (DocumentDB is built from bookworm's PostgreSQL 15 packages)"
    if os.geteuid() != 0:
        return "not root (building DocumentDB installs Debian packages and PostgreSQL extensions)"
    if shutil.which("go") is None:
        return "Go is not installed (FerretDB v2 is built from the Go module proxy)"
    return None


#: Which sources (and flags) the installed extensions were built from: written next to them by
#: ``build``, so a fresh clone on a machine that has them installed builds nothing again.
SYSTEM_STAMP: Final = PG_SHARE / "chatledger-documentdb.stamp"


def _stamp() -> str:
    parts = [COPT, *(sha for _f, sha, _d in SOURCES.values())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _stamped(path: Path) -> bool:
    try:
        return path.read_text().strip() == _stamp()
    except OSError:
        return False


def _gateway_ok(repo_root: Path) -> bool:
    return bool(_ferretdb_module().binary_version(gateway_path(repo_root)) == FERRETDB_V2_VERSION)


def is_built(repo_root: Path = REPO_ROOT) -> bool:
    """Whether the extensions this checkout pins are installed and the gateway binary works."""
    return (
        _stamped(SYSTEM_STAMP)
        and (PG_BIN / "pg_ctl").exists()
        and all((PG_SHARE / name).exists() for name in CONTROL_FILES)
        and _gateway_ok(repo_root)
    )


def _run(args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(
            f"`{' '.join(args)}` failed in {cwd or os.getcwd()} (exit {proc.returncode}):\n{tail}"
        )


def _install_packages() -> None:
    missing = [
        p
        for p in PACKAGES
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True, check=False
        ).stdout.strip()
        != "install ok installed"
    ]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def _source_dirs(src: Path) -> dict[str, Path]:
    return {name: src / name / folder for name, (_file, _sha, folder) in SOURCES.items()}


def _unpack(src: Path) -> None:
    if src.exists():
        shutil.rmtree(src)
    for name, (file, sha, _folder) in SOURCES.items():
        tarball = VENDOR / file
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != sha:
            raise RuntimeError(f"{tarball}: sha256 {digest} is not the vendored {sha}")
        (src / name).mkdir(parents=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(src / name, filter="data")


def _build_extensions(cache: Path) -> None:
    """Build (unless the tree in ``.cache`` is already built from these sources) and install."""
    src = cache / "src"
    built = src / "built.stamp"
    if not _stamped(built):
        _unpack(src)
    dirs = _source_dirs(src)
    pkgconfig = cache / "pkgconfig"
    pkgconfig.mkdir(exist_ok=True)
    # Debian ships Intel's decimal library without a pkg-config file; DocumentDB looks it up.
    (pkgconfig / "intelmathlib.pc").write_text(
        "Name: intelmathlib\nDescription: Intel decimal floating-point math library\nVersion: 2.0\n"
        "Libs: -L/usr/lib/x86_64-linux-gnu -lbidgcc000\nCflags: -I/usr/include\n"
    )
    env = {
        **os.environ,
        "PKG_CONFIG_PATH": os.pathsep.join(filter(None, [str(pkgconfig), os.environ.get("PKG_CONFIG_PATH")])),
        "PG_CONFIG": str(PG_BIN / "pg_config"),
    }
    flags = ["with_llvm=no", f"COPT={COPT}", f"PG_CONFIG={PG_BIN / 'pg_config'}"]
    jobs = f"-j{min(os.cpu_count() or 1, 4)}"
    documentdb = dirs["documentdb"]
    for folder in (
        dirs["pgvector"],
        dirs["pg_cron"],
        documentdb / "pg_documentdb_core",
        documentdb / "pg_documentdb",
        documentdb / "internal" / "pg_documentdb_extended_rum",
    ):
        if not _stamped(built):
            _run(["make", jobs, *flags], cwd=folder, env=env)
        _run(["make", "install", *flags], cwd=folder, env=env)
    built.write_text(_stamp() + "\n")
    SYSTEM_STAMP.write_text(_stamp() + "\n")


def _build_gateway(repo_root: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is not installed: FerretDB v2 cannot be built")
    target = gateway_path(repo_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(target.parent), "GOFLAGS": "-mod=mod", "GOWORK": "off"}
    _run([go, "install", f"{FERRETDB_V2_MODULE}@{FERRETDB_V2_VERSION}"], cwd=target.parent, env=env)


def ensure_built(repo_root: Path = REPO_ROOT, *, force: bool = False) -> Path:
    """Build the tier once (serialised with a file lock); return the gateway binary.

    Raises:
        RuntimeError: the machine cannot build it (see :func:`unsupported_reason`) or a step failed.
    """
    if not force and is_built(repo_root):
        return gateway_path(repo_root)
    why = unsupported_reason()
    if why is not None:
        raise RuntimeError(f"cannot build DocumentDB here: {why}")
    cache = cache_dir(repo_root)
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not is_built(repo_root):
            _install_packages()
            if force:
                (cache / "src" / "built.stamp").unlink(missing_ok=True)
            # The built tree stays in .cache: with it cached, a fresh machine only installs.
            if force or not _stamped(SYSTEM_STAMP) or not all((PG_SHARE / n).exists() for n in CONTROL_FILES):
                _build_extensions(cache)
            if force or not _gateway_ok(repo_root):
                _build_gateway(repo_root)
    return gateway_path(repo_root)


# --------------------------------------------------------------------------- server


def _finalize(procs: list[subprocess.Popen[bytes]], stop_pg: list[Any], base_dir: str | None) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for stop in stop_pg:
        stop()
    if base_dir is not None:
        shutil.rmtree(base_dir, ignore_errors=True)


class DocumentDBServer:
    """PostgreSQL with DocumentDB plus FerretDB v2 in front, on 127.0.0.1, in a throw-away directory.

    ``close()`` (and leaving the ``with`` block) stops both and removes the directory. As a
    safety net the processes are stopped when the object is garbage-collected or at
    interpreter exit (not for ``detach=True``, which ``start`` on the command line uses).
    """

    def __init__(
        self,
        gateway: Path | None = None,
        *,
        repo_root: Path = REPO_ROOT,
        startup_timeout: float = 60.0,
        detach: bool = False,
    ) -> None:
        self.gateway = Path(gateway) if gateway is not None else ensure_built(repo_root)
        self.base_dir = Path(tempfile.mkdtemp(prefix="chatledger-documentdb-"))
        self.pg_dir = self.base_dir / "pg"
        self.state_dir = self.base_dir / "state"
        self.log_path = self.base_dir / "ferretdb.log"
        self.pg_log = self.base_dir / "postgresql.log"
        self.startup_timeout = startup_timeout
        self.detach = detach
        ferretdb = _ferretdb_module()
        self.pg_port = int(ferretdb.free_port())
        self.port = int(ferretdb.free_port())
        self.proc: subprocess.Popen[bytes] | None = None
        self._spawned: list[subprocess.Popen[bytes]] = []
        self._pg_stop: list[Any] = []
        # Safety net (not for a detached server, which must outlive this process): at garbage
        # collection or interpreter exit, stop what we started and remove the directory.
        self._finalizer = weakref.finalize(
            self,
            _finalize,
            [] if detach else self._spawned,
            [] if detach else self._pg_stop,
            None if detach else str(self.base_dir),
        )

    @property
    def uri(self) -> str:
        """Connection string (FerretDB runs with ``--no-auth`` on loopback)."""
        return f"mongodb://{HOST}:{self.port}/"

    @property
    def pid(self) -> int | None:
        """Process id of the gateway, if running."""
        return self.proc.pid if self.proc is not None else None

    def _as_postgres(self, args: Sequence[str]) -> list[str]:
        # initdb refuses to run as root; the cluster belongs to the postgres user.
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of both logs."""
        out = []
        for path in (self.pg_log, self.log_path):
            try:
                out.append(
                    f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                )
            except OSError:
                out.append(f"--- {path.name}: (no log)")
        return "\n".join(out)

    def _start_postgres(self) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base_dir, user.pw_uid, user.pw_gid)
        _run(
            self._as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.pg_dir),
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "-U",
                    "postgres",
                ]
            )
        )
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.pg_port),
            "unix_socket_directories": f"'{self.pg_dir}'",
            "shared_preload_libraries": f"'{PRELOAD}'",
            "cron.database_name": "'postgres'",
            "documentdb.enableBackgroundWorker": "'true'",
            "documentdb.enableBackgroundWorkerJobs": "'true'",
            "documentdb.alternate_index_handler_name": "'extended_rum'",
            "documentdb.defaultUseCompositeOpClass": "on",
            # A throw-away test cluster: durability buys nothing here and costs CI time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.pg_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# chatledger test tier\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(self.pg_dir), "-m", "immediate", "-w", "stop"]
        self._pg_stop[:] = [lambda: subprocess.run(self._as_postgres(stop), capture_output=True, check=False)]
        _run(
            self._as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.pg_dir),
                    "-l",
                    str(self.pg_log),
                    "-w",
                    "-t",
                    str(int(self.startup_timeout)),
                    "start",
                ]
            )
        )
        _run(
            psql(
                self.pg_port,
                "CREATE EXTENSION documentdb CASCADE",
                "CREATE EXTENSION documentdb_extended_rum",
            )
        )

    def command(self) -> list[str]:
        """The gateway's command line."""
        return [
            str(self.gateway),
            f"--postgresql-url=postgres://postgres@{HOST}:{self.pg_port}/postgres",
            f"--listen-addr={HOST}:{self.port}",
            "--listen-unix=",
            "--telemetry=disable",
            "--no-auth",
            f"--state-dir={self.state_dir}",
            f"--debug-addr={HOST}:0",
            "--listen-tls=",
            # Belt and braces: even if reporting were ever enabled it would hit a closed local port.
            f"--dev-telemetry-url=http://{HOST}:9/",
            "--log-level=WARN",
            "--log-format=text",
        ]

    def start(self) -> DocumentDBServer:
        """Start PostgreSQL and the gateway; wait until the gateway answers ``ping``."""
        if self.proc is not None:
            return self
        try:
            self._start_postgres()
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.log_tail()}") from e
        self.state_dir.mkdir(exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DO_NOT_TRACK": "1"},
                cwd=self.base_dir,
                start_new_session=self.detach,
            )
        self._spawned[:] = [self.proc]
        ping = _ferretdb_module().ping
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"FerretDB v2 exited with code {self.proc.returncode}:\n{self.log_tail()}")
            if ping(self.uri, timeout=0.5):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"FerretDB v2 did not answer ping on {self.uri}:\n{self.log_tail()}")

    def close(self) -> None:
        """Stop the gateway and PostgreSQL and remove the directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
        self._spawned.clear()
        for stop in self._pg_stop:
            stop()
        self._pg_stop.clear()
        self._finalizer()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> DocumentDBServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DocumentDBServer(uri={self.uri!r}, pid={self.pid}, base_dir={str(self.base_dir)!r})"


# --------------------------------------------------------------------------- CLI


def default_pid_file(repo_root: Path = REPO_ROOT) -> Path:
    """Where ``start`` records the servers it left running."""
    return cache_dir(repo_root) / "documentdb.pid.json"


def _is_gateway(pid: int, gateway: str) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0] == gateway.encode()
    except OSError:
        return False


def _cmd_build(args: argparse.Namespace) -> int:
    why = None if is_built(REPO_ROOT) else unsupported_reason()
    if why is not None and args.if_supported:
        print(f"DocumentDB tier skipped: {why} (the test header says so too)")
        return 0
    print(ensure_built(REPO_ROOT, force=args.force))
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    pid_file: Path = args.pid_file
    if pid_file.exists():
        old = json.loads(pid_file.read_text())
        if _is_gateway(int(old["pid"]), old["gateway"]):
            print(f"already running: {old['uri']} (pid {old['pid']}, pid file {pid_file})", file=sys.stderr)
            return 1
    server = DocumentDBServer(detach=True)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    info = {
        "pid": server.pid,
        "port": server.port,
        "uri": server.uri,
        "gateway": str(server.gateway),
        "pg_port": server.pg_port,
        "pg_dir": str(server.pg_dir),
        "base_dir": str(server.base_dir),
        "log": str(server.log_path),
    }
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(json.dumps(info, indent=2) + "\n")
    print(f"{URI_ENV}={server.uri}")
    print(f"pid file: {pid_file}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    pid_file: Path = args.pid_file
    gateway = str(json.loads(pid_file.read_text())["gateway"]) if pid_file.exists() else ""
    info = _ferretdb_module().stop_recorded(pid_file, lambda pid: _is_gateway(pid, gateway), 10.0)
    if info is None:
        return 1
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", info["pg_dir"], "-m", "fast", "-w", "stop"]
    if Path(info["pg_dir"], "postmaster.pid").exists():
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *pg_ctl] if os.geteuid() == 0 else pg_ctl,
            capture_output=True,
            check=False,
        )
    shutil.rmtree(info["base_dir"], ignore_errors=True)
    pid_file.unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="install packages and build the extensions and gateway once")
    p.add_argument("--force", action="store_true", help="rebuild even if the stamp is current")
    p.add_argument("--if-supported", action="store_true", help="where it cannot be built: say why, exit 0")
    p.set_defaults(func=_cmd_build)
    p = sub.add_parser(
        "start", help="start a detached cluster + gateway; write JSON with its uri to the pid file"
    )
    p.add_argument("--pid-file", type=Path, default=default_pid_file())
    p.set_defaults(func=_cmd_start)
    p = sub.add_parser("stop", help="stop what the pid file records and remove its data")
    p.add_argument("--pid-file", type=Path, default=default_pid_file())
    p.set_defaults(func=_cmd_stop)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
