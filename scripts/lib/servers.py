"""Start and stop real database servers for Quiver's tests and benchmarks.

Two servers share one interface (``start``, ``stop``, ``kill``, ``restart``,
``dsn``, ``pid``, ``log_path``):

* ``QuiverServer``: the real ``quiver`` binary on free loopback ports with its
  own data dir; ready when ``/readyz`` on the HTTP port answers 200 (or, if the
  HTTP port never answers, when a pgwire connection succeeds).
* ``PgServer``: a throwaway PostgreSQL 15 (Debian) as the ``postgres`` OS user,
  the same recipe as ``scripts/lib/pg.sh``; ready when ``pg_isready`` says so.

Both run in their own process group so ``kill()`` (SIGKILL) takes every process
of the server down at once, as a crash would. No sleep stands in for readiness:
``start`` polls the real readiness signal until a deadline.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PG_BIN_DIR = Path(os.environ.get("PG_BIN_DIR", "/usr/lib/postgresql/15/bin"))


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A bindable loopback port below the kernel's ephemeral range.

    A port the kernel hands out for `bind(0)` is in the ephemeral range, where any
    outbound connection (a client, a worker's RPC) may take it before the server that
    was meant to listen there starts. Ports below that range are never picked for
    outbound connections, and each is handed out once per test process.
    """
    lo = 15000
    hi = min(_ephemeral_range()[0], 65536) - 1
    for _ in range(500):
        port = random.randint(lo, hi)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port found in {lo}-{hi}")


def cargo_target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def find_quiver_bin(prefer_release: bool = False) -> Path:
    """QUIVER_BIN if set; else the debug binary (or release first when asked)."""
    env = os.environ.get("QUIVER_BIN")
    if env:
        return Path(env)
    t = cargo_target_dir()
    order = ["release", "debug"] if prefer_release else ["debug", "release"]
    for profile in order:
        p = t / profile / "quiver"
        if p.exists():
            return p
    return t / "debug" / "quiver"


def _connect_ok(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as c:
            c.execute("SELECT 1").fetchone()
        return True
    except Exception:
        return False


class _Server:
    user = "quiver"
    dbname = "quiver"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path: Path | None = None
        self._log = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={self.dbname}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        if self.log_path and self.log_path.exists():
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        return ""

    def _spawn(self, argv: list[str], env: dict | None = None) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: kill() hits all of it
            env=env,
        )

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the whole server process group, as a crash would."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._close_log()

    def stop(self, timeout: float = 60) -> int | None:
        """Clean shutdown (SIGTERM for quiver, SIGINT 'fast' for PG); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(self._stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"{type(self).__name__} did not stop within {timeout}s")
        # make sure nothing of the group is left
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._close_log()
        return self.proc.returncode

    def restart(self, timeout: float = 120) -> None:
        if self.running():
            self.stop()
        self.start(timeout=timeout)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()


class QuiverServer(_Server):
    """The real quiver binary, standalone, trust auth on loopback."""

    _stop_signal = signal.SIGTERM

    def __init__(self, binary: Path | str | None = None, data_dir: Path | str | None = None,
                 extra_args: list[str] | None = None, env: dict | None = None) -> None:
        super().__init__()
        self.binary = Path(binary) if binary else find_quiver_bin()
        self._own_dir = data_dir is None
        self.base = Path(tempfile.mkdtemp(prefix="quiver-test."))
        self.data_dir = Path(data_dir) if data_dir else self.base / "data"
        self.log_path = self.base / "quiver.log"
        self.extra_args = extra_args or []
        self.env = env
        self.port = free_port()
        self.http_port = free_port()
        while self.http_port == self.port:
            self.http_port = free_port()

    def argv(self) -> list[str]:
        return [str(self.binary), "--data-dir", str(self.data_dir), "--port", str(self.port),
                "--http-port", str(self.http_port), "--bind-address", "127.0.0.1", *self.extra_args]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        return False

    def start(self, timeout: float = 120) -> None:
        if not self.binary.exists():
            raise FileNotFoundError(f"quiver binary not found at {self.binary} (set QUIVER_BIN or build it: cargo build -p quiver-node)")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        if self.env:
            env.update(self.env)
        self._spawn(self.argv(), env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"quiver exited with {self.proc.returncode} during startup:\n{self.log_tail()}")
            # /readyz is the contract; a working pgwire connection also proves readiness.
            if self.ready() or _connect_ok(self.dsn):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"quiver not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)  # poll interval, not a readiness stand-in

    def close(self) -> None:
        if self.running():
            try:
                self.stop()
            except Exception:
                self.kill()
        if not os.environ.get("QUIVER_KEEP_DATA"):
            shutil.rmtree(self.base, ignore_errors=True)


class PgServer(_Server):
    """A throwaway PostgreSQL 15 server owned by the postgres OS user."""

    _stop_signal = signal.SIGINT  # "fast" shutdown: abort sessions, checkpoint, exit 0

    def __init__(self, extra_opts: dict | None = None, user: str = "quiver", dbname: str = "quiver") -> None:
        super().__init__()
        self.user = user
        self.dbname = dbname
        self.base = Path(tempfile.mkdtemp(prefix="quiver-pg."))
        self.data_dir = self.base / "data"
        self.log_path = self.base / "server.log"
        self.extra_opts = extra_opts or {}
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self._initialized = False

    def _as_pg(self, argv: list[str]) -> list[str]:
        if self._as_root:
            return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]
        return argv

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True)
        if self._as_root:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.data_dir, "postgres", "postgres")
        r = subprocess.run(self._as_pg([str(PG_BIN_DIR / "initdb"), "-D", str(self.data_dir), "-A", "trust",
                                        "-U", self.user, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        self._initialized = True

    def argv(self) -> list[str]:
        opts = {"listen_addresses": "127.0.0.1", **self.extra_opts}
        argv = [str(PG_BIN_DIR / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), "-k", "/tmp"]
        for k, v in opts.items():
            argv += ["-c", f"{k}={v}"]
        return self._as_pg(argv)

    def ready(self) -> bool:
        r = subprocess.run([str(PG_BIN_DIR / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", self.user, "-d", "postgres", "-t", "1"])
        return r.returncode == 0

    def start(self, timeout: float = 120) -> None:
        first = not self._initialized
        if first:
            self._initdb()
        self._spawn(self.argv())
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode} during startup:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"postgres not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)  # poll interval; pg_isready is the readiness signal
        if first and self.dbname != "postgres":
            import psycopg

            with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                                 autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{self.dbname}"')

    def close(self) -> None:
        if self.running():
            try:
                self.stop()
            except Exception:
                self.kill()
        if not os.environ.get("QUIVER_KEEP_DATA"):
            shutil.rmtree(self.base, ignore_errors=True)


def machine_info() -> dict:
    """nproc, RAM, CPU model, git commit: for benchmark reports."""
    info = {"nproc": os.cpu_count()}
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["ram_gib"] = round(kb / 1024 / 1024, 1)
    except Exception:
        info["ram_gib"] = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except Exception:
        pass
    try:
        c = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        commit = c.stdout.strip() if c.returncode == 0 else "uncommitted"
        d = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
        if c.returncode == 0 and d.stdout.strip():
            commit += "+dirty"
        info["commit"] = commit
    except Exception:
        info["commit"] = "unknown"
    return info


class QuiverCluster:
    """One coordinator and `workers` workers of the real quiver binary on loopback.

    The coordinator is a QuiverServer (pgwire, /readyz); workers have no pgwire port, so
    they are awaited through their own /readyz, which turns 200 once they are registered.
    """

    def __init__(self, workers: int = 3, binary: Path | str | None = None) -> None:
        self.rpc_port = free_port()
        self.coordinator = QuiverServer(binary=binary, extra_args=[
            "--role", "coordinator", "--node-id", "0", "--rpc-port", str(self.rpc_port)])
        self.workers = [QuiverWorker(self.rpc_port, binary=binary) for _ in range(workers)]

    @property
    def dsn(self) -> str:
        return self.coordinator.dsn

    def start(self, timeout: float = 120) -> None:
        self.coordinator.start(timeout)
        for w in self.workers:
            w.start(timeout)

    def wait_workers(self, n: int | None = None, timeout: float = 60) -> None:
        """Until pg_dist_node lists `n` (default: all) healthy workers."""
        want = len(self.workers) if n is None else n
        deadline = time.monotonic() + timeout
        import psycopg
        while True:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                got = c.execute("SELECT count(*) FROM pg_dist_node WHERE noderole = 'worker' "
                                "AND health = 'healthy'").fetchone()[0]
            if got >= want:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{got} of {want} workers healthy after {timeout}s")
            time.sleep(0.1)  # poll interval

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.coordinator.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()


class QuiverWorker(QuiverServer):
    """A worker: registers with the coordinator at 127.0.0.1:`coordinator_rpc`."""

    def __init__(self, coordinator_rpc: int, binary: Path | str | None = None) -> None:
        self.rpc_port = free_port()
        super().__init__(binary=binary, extra_args=[
            "--role", "worker", "--rpc-port", str(self.rpc_port),
            "--coordinator-address", f"127.0.0.1:{coordinator_rpc}"])

    def argv(self) -> list[str]:
        return [str(self.binary), "--data-dir", str(self.data_dir), "--http-port", str(self.http_port),
                "--bind-address", "127.0.0.1", *self.extra_args]

    def start(self, timeout: float = 120) -> None:
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self._spawn(self.argv(), env)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"worker not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)  # poll interval, not a readiness stand-in


@contextmanager
def running_cluster(workers: int = 3):
    """A started QuiverCluster whose workers are all healthy; closed on exit."""
    c = QuiverCluster(workers=workers)
    try:
        c.start()
        c.wait_workers()
        yield c
    finally:
        c.close()
