#!/usr/bin/env python3
"""Local development/test stack: a real single-node Kafka (KRaft) and PostgreSQL.

Usage::

    python deploy/local/stack.py up|down|status|env [--dir .stack]

``up`` starts what is missing (idempotent) and writes ``<dir>/env``, a
shell-sourceable file with ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL``.
If those variables are already set in the environment, the matching service is
treated as external and not started.

This is a dev/test stack, tuned for speed rather than durability: PostgreSQL
runs with ``fsync=off`` unless ``STACK_PG_FSYNC=on`` is set.

Only the standard library is imported at module level; the Kafka readiness
check imports aiokafka lazily (the script runs inside the project venv).

Importable API (the test suite loads this file by path), also usable for a
second, throwaway broker::

    start_kafka(state_dir, port=None, controller_port=None, libs_dir=None, timeout=120)
    stop_kafka(state_dir, kill=False)
    wait_kafka_ready(bootstrap, timeout)
    fetch_kafka_libs(libs_dir)

State layout under ``<dir>``::

    env                  KEY=value lines written by ``up``
    kafka.pid            pid of the broker JVM
    kafka.log            broker stdout/stderr
    kafka/libs/          broker classpath (from deploy/local/pom.xml)
    kafka/ports          chosen ports, reused on restart
    kafka/server.properties, kafka/log4j.properties, kafka/data/
    postgres.pid         pid of the postmaster
    postgres.log         server log
    postgres/port        chosen port, reused on restart
    postgres/data/       the cluster (owned by the postgres user when run as root)
"""

# No `from __future__ import annotations`: with it, @dataclass needs the module
# in sys.modules, which breaks loading this file by path without registering it.
import argparse
import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import fcntl
import hashlib
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable, Iterator

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_DIR = SCRIPT_DIR.parents[1]
POM_FILE = SCRIPT_DIR / "pom.xml"
DEFAULT_STATE_DIR = REPO_DIR / ".stack"

DEFAULT_KAFKA_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
DEFAULT_PG_PORT = 5432
DATABASE_NAME = "timestamps"
PG_SUPERUSER = "postgres"
PG_OS_USER = "postgres"
PG_TIMEOUT = 60.0
KAFKA_STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 40
# A unix socket path must fit in sun_path (108 bytes including the NUL).
MAX_SOCKET_PATH = 100

# Popen objects of brokers started by this process, so stop_kafka() can reap
# them (otherwise a stopped child lingers as a zombie and looks alive).
_CHILDREN: dict[int, subprocess.Popen] = {}


class StackError(RuntimeError):
    """A stack component could not be set up, started or stopped."""


def log(message: str) -> None:
    """Progress output for the CLI (stderr, so `env` output stays clean)."""
    print(f"[stack] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Small helpers: files, ports, processes
# --------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Write a file via rename so readers never see a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_kv(path: Path) -> dict[str, str]:
    """Parse simple KEY=value lines (values may be shell-quoted)."""
    result: dict[str, str] = {}
    if not path.is_file():
        return result
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            parts = shlex.split(value) if value.strip() else [""]
            result[key.strip()] = parts[0] if parts else ""
    return result


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last lines of a log file, for error messages."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    return "\n".join(content[-lines:])


def _with_log_tail(message: object, log_file: Path) -> str:
    """An error message followed by the end of the component's log."""
    return f"{message}\n--- last {LOG_TAIL_LINES} lines of {log_file} ---\n{_tail(log_file)}"


def _port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port (or on the wildcard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR so TIME_WAIT leftovers of a stopped server do not
        # count as busy; the servers themselves bind with it too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Distinct ports the kernel considers free right now."""
    sockets = []
    try:
        # Hold all sockets open until done so the kernel hands out distinct ports.
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _read_pid(path: Path) -> int | None:
    """Pid stored as the first line of a file, or None."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    """argv of a running process, [] if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pid_alive(pid: int) -> bool:
    """True while any thread of pid runs (its sockets may still be open)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        # Our own child: poll() reaps it once every thread has exited.
        return child.poll() is None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    state = fields.get("State", "").split()[:1]
    # A zombie waiting for its (foreign) parent to reap it is dead, unless it
    # is a thread-group leader whose other threads are still shutting down.
    return state not in (["Z"], ["X"]) or int(fields.get("Threads", "1")) > 1


def _wait_gone(pid: int, timeout: float) -> bool:
    """Poll until pid exits; True if it did within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.2)
    return not _pid_alive(pid)


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, raising StackError with its output if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise StackError(f"{what}: command not found: {cmd[0]}") from exc
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise StackError(f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{output}")
    return proc


def _run_coro(coro):
    """asyncio.run(), also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from async code (e.g. an async test): use a private loop in a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise up/down on one state dir (parallel test workers may race)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------


@dataclasses.dataclass
class KafkaProcess:
    """A broker started (or found running) in state_dir."""

    pid: int
    port: int
    bootstrap: str
    state_dir: Path
    controller_port: int = 0


@dataclasses.dataclass
class _KafkaPaths:
    """Where a broker's files live inside a state dir."""

    state_dir: Path

    @property
    def home(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def ports(self) -> Path:
        return self.home / "ports"

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.home / "log4j.properties"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "kafka.log"


LOG4J_PROPERTIES = """\
# Console only; the stack redirects stdout to kafka.log.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
# Kafka is chatty at INFO; keep only warnings plus the start/stop lines.
log4j.logger.kafka=WARN
log4j.logger.org.apache.kafka=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
"""


def _libs_present(libs_dir: Path) -> bool:
    return libs_dir.is_dir() and any(libs_dir.glob("*.jar"))


def fetch_kafka_libs(libs_dir: Path) -> Path:
    """Copy the broker's jars (per deploy/local/pom.xml) into libs_dir, once."""
    libs_dir = Path(libs_dir).resolve()
    if _libs_present(libs_dir):
        return libs_dir
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch the Kafka jars but is not on PATH")
    # Fill a scratch dir and rename it, so an interrupted download never
    # leaves a partial classpath that later runs would take as complete.
    scratch = libs_dir.with_name(f".{libs_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    libs_dir.parent.mkdir(parents=True, exist_ok=True)
    log(f"fetching Kafka jars into {libs_dir} (mvn)")
    goal = ["dependency:copy-dependencies", "-DincludeScope=runtime"]
    cmd = ["mvn", "-q", "-B", "-f", str(POM_FILE), *goal, f"-DoutputDirectory={scratch}"]
    _run(cmd, "fetching Kafka jars with Maven")
    try:
        if libs_dir.exists() and not any(libs_dir.iterdir()):
            libs_dir.rmdir()
        os.rename(scratch, libs_dir)
    except OSError:
        # Another process filled libs_dir meanwhile; use theirs.
        shutil.rmtree(scratch, ignore_errors=True)
        if not _libs_present(libs_dir):
            raise
    return libs_dir


def _read_ports(paths: _KafkaPaths) -> tuple[int, int] | None:
    values = _read_kv(paths.ports)
    try:
        return int(values["port"]), int(values["controller_port"])
    except (KeyError, ValueError):
        return None


def _choose_kafka_ports(
    paths: _KafkaPaths, port: int | None, controller_port: int | None, prefer_defaults: bool
) -> tuple[int, int]:
    """Explicit ports win, then the recorded ones, then defaults/free ports."""
    recorded = _read_ports(paths)
    if port is None and controller_port is None and recorded:
        port, controller_port = recorded
        for p in recorded:
            if not _port_is_free(p):
                raise StackError(
                    f"Kafka port {p} recorded in {paths.ports} is in use by another "
                    f"process; free it, or delete that file to pick new ports"
                )
        return port, controller_port
    defaults = (DEFAULT_KAFKA_PORT, DEFAULT_CONTROLLER_PORT)
    if (
        port is None
        and controller_port is None
        and prefer_defaults
        and all(map(_port_is_free, defaults))
    ):
        return defaults
    for p in (port, controller_port):
        if p is not None and not _port_is_free(p):
            raise StackError(f"Kafka port {p} was requested but is in use by another process")
    free = iter(_free_ports(2))
    chosen = (port or next(free), controller_port or next(free))
    if chosen[0] == chosen[1]:
        raise StackError(f"Kafka port and controller port must differ (both {chosen[0]})")
    return chosen


def _server_properties(paths: _KafkaPaths, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(paths.data.resolve()),
        # One broker: every internal topic must live with replication 1, and
        # few partitions keep the first consumer-group start fast.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        # Topics must be created explicitly, as in production.
        "auto.create.topics.enable": "false",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # After a SIGKILL the restarted broker cannot re-register until the
        # old registration's session expires (default 9 s); tests that crash
        # the broker restart faster with a short session.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "1000",
    }
    lines = ["# Generated by deploy/local/stack.py; rewritten on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("java is needed to run Kafka but is not on PATH (install a JDK 17)")
    return java


def _format_storage(paths: _KafkaPaths, libs_dir: Path) -> None:
    """Format the KRaft log dir once; a formatted dir has meta.properties."""
    if (paths.data / "meta.properties").is_file():
        return
    classpath = f"{libs_dir}/*"
    java = _java()
    tool = [java, "-cp", classpath, "kafka.tools.StorageTool"]
    what = "generating a Kafka cluster id (StorageTool random-uuid)"
    cluster_id = _run([*tool, "random-uuid"], what).stdout.split()[-1]
    what = f"formatting Kafka storage in {paths.data} (StorageTool format)"
    _run([*tool, "format", "-t", cluster_id, "-c", str(paths.properties)], what)


def _is_our_broker(pid: int, paths: _KafkaPaths) -> bool:
    """True if pid is a live Kafka JVM started with this state dir's config."""
    argv = _cmdline(pid)
    return (
        _pid_alive(pid)
        and bool(argv)
        and os.path.basename(argv[0]).startswith("java")
        and "kafka.Kafka" in argv
        and str(paths.properties.resolve()) in argv
    )


def _cluster_id(paths: _KafkaPaths) -> str | None:
    """The cluster id StorageTool wrote into the data dir."""
    return _read_kv(paths.data / "meta.properties").get("cluster.id")


def _running_broker(paths: _KafkaPaths) -> int | None:
    pid = _read_pid(paths.pid_file)
    return pid if pid is not None and _is_our_broker(pid, paths) else None


def _spawn_broker(paths: _KafkaPaths, libs_dir: Path) -> int:
    """Start the broker JVM detached; return its pid."""
    cmd = [
        _java(),
        "-Xms256m",
        "-Xmx512m",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{paths.log4j.resolve()}",
        "-cp",
        f"{libs_dir}/*",
        "kafka.Kafka",
        str(paths.properties.resolve()),
    ]
    with open(paths.log_file, "a") as log_handle:
        log_handle.write(f"\n===== stack.py starting Kafka at {time.ctime()} =====\n")
        log_handle.flush()
        # New session: the broker outlives this script and ignores its Ctrl-C.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            cwd=paths.home,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    _write_atomic(paths.pid_file, f"{proc.pid}\n")
    return proc.pid


# Set while a readiness probe runs; asyncio tasks inherit it, so the filter
# below mutes exactly the probe's own "Unable connect" errors while the broker
# boots, and nothing logged by other Kafka clients in the same process.
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("stack_probing", default=False)
_PROBE_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.admin.client")


def _mute_probe_logs() -> None:
    """Install (once) the filter that drops aiokafka records of our probes."""
    for name in _PROBE_LOGGERS:
        logger = logging.getLogger(name)
        if _probe_log_filter not in logger.filters:
            logger.addFilter(_probe_log_filter)


def _probe_log_filter(record: logging.LogRecord) -> bool:
    return not _PROBING.get()


async def _kafka_answers(bootstrap: str, attempt_timeout: float, cluster_id: str | None) -> None:
    """One metadata round trip with an admin client; raises if it fails.

    With cluster_id, also raises if a different cluster answers (another
    broker on the port would otherwise pass for ours).
    """
    from aiokafka.admin import AIOKafkaAdminClient  # lazy: only this needs aiokafka

    _mute_probe_logs()
    _PROBING.set(True)  # asyncio.run gives this coroutine its own context copy
    client = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(attempt_timeout * 1000)
    )
    try:
        await asyncio.wait_for(client.start(), attempt_timeout)
        info = await asyncio.wait_for(client.describe_cluster(), attempt_timeout)
        if cluster_id is not None and info.get("cluster_id") != cluster_id:
            raise _WrongCluster(
                f"{bootstrap} is cluster {info.get('cluster_id')}, not {cluster_id}"
            )
    finally:
        await client.close()


class _WrongCluster(Exception):
    """A broker answered, but it belongs to another cluster."""


def kafka_answers(
    bootstrap: str, attempt_timeout: float = 5.0, cluster_id: str | None = None
) -> bool:
    """True if the broker at bootstrap (of cluster_id, if given) answers metadata now."""
    try:
        _run_coro(_kafka_answers(bootstrap, attempt_timeout, cluster_id))
    except (ImportError, _WrongCluster):
        raise
    except Exception:  # any connection/protocol error means "not (yet) ready"
        return False
    return True


def wait_kafka_ready(
    bootstrap: str,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    cluster_id: str | None = None,
) -> None:
    """Block until the broker answers metadata requests.

    Raises TimeoutError after timeout seconds, or StackError as soon as
    ``alive()`` (if given) reports the broker process gone or a broker of a
    cluster other than cluster_id (if given) answers.
    """
    try:
        import aiokafka  # noqa: F401
    except ImportError as exc:
        raise StackError(
            "aiokafka is needed for the Kafka readiness check; run this script "
            "with the project's virtualenv python"
        ) from exc
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise StackError(f"Kafka process exited before answering at {bootstrap}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s")
        try:
            if kafka_answers(bootstrap, max(1.0, min(5.0, remaining)), cluster_id):
                return
        except _WrongCluster as exc:
            raise StackError(f"another Kafka answers at {bootstrap}: {exc}") from exc
        time.sleep(0.5)


def start_kafka(
    state_dir: Path,
    port: int | None = None,
    controller_port: int | None = None,
    libs_dir: Path | None = None,
    timeout: float = 120,
    *,
    prefer_default_ports: bool = False,
) -> KafkaProcess:
    """Start a single-node KRaft broker with its state in state_dir; wait until ready.

    Reuses state_dir's formatted data and recorded ports on a restart, and
    returns the running broker if one from state_dir is already up. Without
    explicit or recorded ports, free ports are picked (9092/9093 first when
    prefer_default_ports). libs_dir defaults to state_dir/kafka/libs and is
    fetched with Maven if empty. On failure the broker is stopped and
    StackError carries the end of kafka.log. The broker runs in its own
    session and outlives the caller: stop it with stop_kafka().
    """
    paths = _KafkaPaths(Path(state_dir).resolve())
    paths.home.mkdir(parents=True, exist_ok=True)
    running = _running_broker(paths)
    recorded = _read_ports(paths)
    if running is not None and recorded:
        bootstrap = f"127.0.0.1:{recorded[0]}"
        wait_kafka_ready(
            bootstrap, timeout, alive=lambda: _pid_alive(running), cluster_id=_cluster_id(paths)
        )
        return KafkaProcess(running, recorded[0], bootstrap, paths.state_dir, recorded[1])
    if running is not None:
        raise StackError(f"Kafka pid {running} runs from {paths.home} but {paths.ports} is missing")

    libs = fetch_kafka_libs(Path(libs_dir) if libs_dir else paths.libs)
    kport, cport = _choose_kafka_ports(paths, port, controller_port, prefer_default_ports)
    _write_atomic(paths.ports, f"port={kport}\ncontroller_port={cport}\n")
    _write_atomic(paths.properties, _server_properties(paths, kport, cport))
    _write_atomic(paths.log4j, LOG4J_PROPERTIES)
    paths.data.mkdir(parents=True, exist_ok=True)
    _format_storage(paths, libs)

    pid = _spawn_broker(paths, libs)
    bootstrap = f"127.0.0.1:{kport}"
    try:
        wait_kafka_ready(
            bootstrap, timeout, alive=lambda: _pid_alive(pid), cluster_id=_cluster_id(paths)
        )
    except (TimeoutError, StackError) as exc:
        # Do not leave a half-started broker behind on failure.
        stop_kafka(paths.state_dir, kill=True)
        raise StackError(_with_log_tail(exc, paths.log_file)) from exc
    return KafkaProcess(pid, kport, bootstrap, paths.state_dir, cport)


def stop_kafka(state_dir: Path, kill: bool = False) -> bool:
    """Stop the broker recorded in state_dir/kafka.pid; True if one was stopped.

    SIGTERM (clean shutdown, up to 30 s, then SIGKILL), or SIGKILL at once
    when kill=True. Only a process verified to be this state dir's Kafka JVM
    is signalled.
    """
    paths = _KafkaPaths(Path(state_dir).resolve())
    pid = _read_pid(paths.pid_file)
    if pid is None:
        return False
    stopped = False
    if _is_our_broker(pid, paths):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if not _wait_gone(pid, 10 if kill else KAFKA_STOP_TIMEOUT):
            os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, 10):
                raise StackError(f"Kafka pid {pid} did not exit after SIGKILL")
        stopped = True
    _CHILDREN.pop(pid, None)
    paths.pid_file.unlink(missing_ok=True)
    return stopped


def kafka_status(state_dir: Path) -> tuple[int | None, str | None]:
    """(pid of our running broker or None, bootstrap from recorded ports or None)."""
    paths = _KafkaPaths(Path(state_dir).resolve())
    recorded = _read_ports(paths)
    return _running_broker(paths), (f"127.0.0.1:{recorded[0]}" if recorded else None)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


@dataclasses.dataclass
class PostgresProcess:
    """A postmaster started (or found running) in state_dir."""

    pid: int
    port: int
    url: str
    bin_dir: Path


@dataclasses.dataclass
class _PgPaths:
    state_dir: Path

    @property
    def home(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def port_file(self) -> Path:
        return self.home / "port"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "postgres.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        # Long state paths (deep temp dirs) overflow the unix socket path
        # limit; fall back to a short, per-state-dir path under /tmp.
        if len(str(self.home)) + len("/.s.PGSQL.65535") <= MAX_SOCKET_PATH:
            return self.home
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
        return Path(f"/tmp/.stack-pg-{digest}")


def _pg_version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def find_pg_bin(version: str | None = None) -> Path | None:
    """Highest-version /usr/lib/postgresql/*/bin that has the server binaries.

    The client package alone also creates such a dir (psql only), so look for
    initdb/pg_ctl/postgres. With version, only that major version qualifies.
    """
    candidates = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if all((d / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))
        and (version is None or d.parent.name == version)
    ]
    return max(candidates, key=_pg_version_key) if candidates else None


def install_postgres() -> Path:
    """Install Debian's postgresql package (as root) and return its bin dir."""
    if os.geteuid() != 0:
        raise StackError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin and "
            "not running as root to install them; run: sudo apt-get install postgresql"
        )
    log("PostgreSQL not found; installing it with apt-get (takes a minute)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    # The package also creates and may start a system cluster on 5432; we
    # leave that alone and run our own cluster in the state dir.
    # Wait for a concurrent apt/dpkg run instead of failing on its lock.
    lock_wait = ["-o", "DPkg::Lock::Timeout=120"]
    cmd = ["apt-get", *lock_wait, "install", "-y", "-qq", "postgresql"]
    _run(cmd, "apt-get install postgresql", env=env)
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise StackError(
            "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb appeared"
        )
    return bin_dir


def _sbin(tool: str) -> str:
    """Path of a root tool; /usr/sbin is not on every root PATH (e.g. `su` without -)."""
    return shutil.which(tool) or f"/usr/sbin/{tool}"


def _pg_user() -> pwd.struct_passwd | None:
    """The OS user that runs postgres: 'postgres' when we are root, else None (= us)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        log(f"creating system user {PG_OS_USER}")
        _run(
            [_sbin("useradd"), "--system", "--user-group", "--no-create-home", PG_OS_USER],
            f"creating system user {PG_OS_USER}",
        )
        return pwd.getpwnam(PG_OS_USER)


def _as_pg_user(cmd: list[str]) -> list[str]:
    """Prefix cmd so it runs as the postgres OS user (postgres refuses root)."""
    return [_sbin("runuser"), "-u", PG_OS_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _make_traversable(path: Path) -> None:
    """chmod o+x on path and its ancestors so the postgres user can reach it."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & 0o001:
            log(f"chmod o+x {directory} (so user {PG_OS_USER} can reach the data dir)")
            directory.chmod(mode | 0o001)


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, user.pw_uid, user.pw_gid)


def _prepare_pg_dirs(paths: _PgPaths) -> None:
    """Create the state dirs and hand them to the postgres user when root."""
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.log_file.touch(exist_ok=True)
    paths.socket_dir.mkdir(parents=True, exist_ok=True)
    user = _pg_user()
    if user is None:
        return
    _chown_tree(paths.home, user)
    os.chown(paths.log_file, user.pw_uid, user.pw_gid)
    os.chown(paths.socket_dir, user.pw_uid, user.pw_gid)
    _make_traversable(paths.home)
    _make_traversable(paths.socket_dir)


def _initdb(paths: _PgPaths, bin_dir: Path) -> None:
    """Create the cluster once (a finished one has PG_VERSION)."""
    if (paths.data / "PG_VERSION").is_file():
        return
    # A data dir without PG_VERSION is debris of an interrupted initdb.
    shutil.rmtree(paths.data, ignore_errors=True)
    log(f"initdb {paths.data}")
    initdb, data = str(bin_dir / "initdb"), str(paths.data)
    base = [initdb, "-D", data, "-U", PG_SUPERUSER, "--auth=trust", "--encoding=UTF8"]
    try:
        _run(_as_pg_user([*base, "--locale=C.UTF-8"]), "initdb", cwd=paths.home)
    except StackError as exc:
        # Minimal systems may lack the C.UTF-8 locale.
        log(f"initdb with C.UTF-8 failed, retrying with --no-locale: {exc}")
        shutil.rmtree(paths.data, ignore_errors=True)
        _run(_as_pg_user([*base, "--no-locale"]), "initdb --no-locale", cwd=paths.home)


def _choose_pg_port(paths: _PgPaths) -> int:
    """Recorded port, else 5432 if free, else any free port."""
    recorded = _read_pid(paths.port_file)  # same format: a number on line 1
    if recorded is not None:
        if not _port_is_free(recorded):
            raise StackError(
                f"PostgreSQL port {recorded} recorded in {paths.port_file} is in use by "
                f"another process; free it, or delete that file to pick a new port"
            )
        return recorded
    return DEFAULT_PG_PORT if _port_is_free(DEFAULT_PG_PORT) else _free_ports(1)[0]


def _running_postmaster(paths: _PgPaths) -> tuple[int, int] | None:
    """(pid, port) of this data dir's live postmaster, from postmaster.pid."""
    try:
        lines = (paths.data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    argv = _cmdline(pid)
    ours = (
        _pid_alive(pid)
        and bool(argv)
        and os.path.basename(argv[0]) in ("postgres", "postmaster")
        and str(paths.data) in " ".join(argv)
    )
    return (pid, port) if ours else None


def _pg_ready(bin_dir: Path, port: int) -> bool:
    proc = subprocess.run(
        [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
        capture_output=True,
    )
    return proc.returncode == 0


def _wait_pg_ready(paths: _PgPaths, bin_dir: Path, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _pg_ready(bin_dir, port):
        if time.monotonic() > deadline:
            message = f"PostgreSQL on 127.0.0.1:{port} not ready after {timeout:.0f}s"
            raise StackError(_with_log_tail(message, paths.log_file))
        time.sleep(0.5)


def _pg_ctl_start(paths: _PgPaths, bin_dir: Path, port: int) -> None:
    # pg_ctl hands -o to a shell, so quote the path.
    options = [
        f"-p {port}",
        f"-k {shlex.quote(str(paths.socket_dir))}",
        "-c listen_addresses=127.0.0.1",
        "-c max_connections=200",
    ]
    # Dev/test stack: trade crash safety for speed unless asked otherwise.
    if os.environ.get("STACK_PG_FSYNC", "").lower() != "on":
        options.append("-c fsync=off")
    pg_ctl, data, log_file = str(bin_dir / "pg_ctl"), str(paths.data), str(paths.log_file)
    wait = ["-w", "-t", str(int(PG_TIMEOUT))]
    cmd = [pg_ctl, "-D", data, "-l", log_file, "-o", " ".join(options), *wait, "start"]
    try:
        _run(_as_pg_user(cmd), "pg_ctl start", cwd=paths.home)
    except StackError as exc:
        raise StackError(_with_log_tail(exc, paths.log_file)) from exc


def _ensure_database(bin_dir: Path, port: int, name: str = DATABASE_NAME) -> None:
    conn = ["-h", "127.0.0.1", "-p", str(port), "-U", PG_SUPERUSER]
    query = f"SELECT 1 FROM pg_database WHERE datname='{name}'"
    psql = [str(bin_dir / "psql"), *conn, "-d", "postgres", "-tAc", query]
    exists = _run(psql, f"checking for database {name}").stdout.strip()
    if exists != "1":
        log(f"creating database {name}")
        _run([str(bin_dir / "createdb"), *conn, name], f"creating database {name}")


def _pg_bin_for(paths: _PgPaths) -> Path:
    """Server binaries matching an existing cluster's version, else the newest.

    Installs PostgreSQL when no server binaries exist at all.
    """
    version_file = paths.data / "PG_VERSION"
    wanted = version_file.read_text().strip() if version_file.is_file() else None
    bin_dir = find_pg_bin(wanted)
    if bin_dir is not None:
        return bin_dir
    other = find_pg_bin()
    if other is not None:
        raise StackError(
            f"{paths.data} was created by PostgreSQL {wanted} but only {other} is "
            f"installed; install postgresql-{wanted} or delete the data dir"
        )
    return install_postgres()


def start_postgres(state_dir: Path) -> PostgresProcess:
    """Start (or find running) this state dir's PostgreSQL; ensure the app database."""
    paths = _PgPaths(Path(state_dir).resolve())
    bin_dir = _pg_bin_for(paths)
    running = _running_postmaster(paths)
    if running is None:
        _prepare_pg_dirs(paths)
        _initdb(paths, bin_dir)
        port = _choose_pg_port(paths)
        _write_atomic(paths.port_file, f"{port}\n")
        log(f"starting PostgreSQL on 127.0.0.1:{port}")
        _pg_ctl_start(paths, bin_dir, port)
        running = _running_postmaster(paths)
        if running is None:
            raise StackError(f"pg_ctl reported success but no postmaster runs for {paths.data}")
    pid, port = running
    _write_atomic(paths.pid_file, f"{pid}\n")
    _wait_pg_ready(paths, bin_dir, port, PG_TIMEOUT)
    _ensure_database(bin_dir, port)
    url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"
    return PostgresProcess(pid, port, url, bin_dir)


def stop_postgres(state_dir: Path) -> bool:
    """Stop this state dir's postmaster (pg_ctl stop -m fast); True if one was stopped."""
    paths = _PgPaths(Path(state_dir).resolve())
    running = _running_postmaster(paths)
    recorded = _read_pid(paths.pid_file)
    if running is None:
        paths.pid_file.unlink(missing_ok=True)
        return False
    pid, _ = running
    if recorded is not None and recorded != pid:
        log(f"postgres.pid said {recorded} but postmaster.pid says {pid}; stopping {pid}")
    bin_dir = find_pg_bin((paths.data / "PG_VERSION").read_text().strip())
    try:
        if bin_dir is None:
            raise StackError("no pg_ctl matching the cluster's version is installed")
        pg_ctl, data = str(bin_dir / "pg_ctl"), str(paths.data)
        cmd = [pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "30", "stop"]
        _run(_as_pg_user(cmd), "pg_ctl stop", cwd=paths.home)
    except StackError as exc:
        log(f"{exc}; falling back to SIGTERM of pid {pid}")
        if _running_postmaster(paths) is not None:
            os.kill(pid, signal.SIGTERM)  # "smart" shutdown
            if not _wait_gone(pid, 30):
                raise StackError(f"PostgreSQL pid {pid} still running 30s after SIGTERM") from exc
    paths.pid_file.unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------
# env file and CLI commands
# --------------------------------------------------------------------------


def write_env(state_dir: Path, values: dict[str, str]) -> Path:
    """Write KEY=value lines (shell-quoted where needed) atomically."""
    body = "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())
    path = Path(state_dir) / "env"
    _write_atomic(
        path, "# Written by deploy/local/stack.py up; source it or read KEY=value.\n" + body
    )
    return path


def _external(state_dir: Path, key: str, managed_marker: str) -> str | None:
    """The environment's value for key if it points at a service we do not manage.

    A value equal to the one our own env file recorded for a service we
    started is ours (the shell has merely sourced .stack/env), not external.
    """
    value = os.environ.get(key)
    recorded = _read_kv(state_dir / "env")
    if value and recorded.get(key) == value and managed_marker in recorded:
        return None
    return value or None


def cmd_up(state_dir: Path) -> int:
    started = time.monotonic()
    external_kafka = _external(state_dir, "KAFKA_BOOTSTRAP_SERVERS", "STACK_KAFKA_PID")
    external_db = _external(state_dir, "DATABASE_URL", "STACK_POSTGRES_PID")
    env: dict[str, str] = {}
    with _locked(state_dir):
        if external_kafka:
            log(f"Kafka: using external KAFKA_BOOTSTRAP_SERVERS={external_kafka}")
            env["KAFKA_BOOTSTRAP_SERVERS"] = external_kafka
        else:
            was_running = kafka_status(state_dir)[0]
            kafka = start_kafka(state_dir, prefer_default_ports=True)
            state = "already running" if was_running == kafka.pid else "started"
            log(f"Kafka: {state}, pid {kafka.pid}, {kafka.bootstrap}")
            env.update(
                KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap,
                STACK_KAFKA_PID=str(kafka.pid),
                STACK_KAFKA_LIBS=str(_KafkaPaths(state_dir.resolve()).libs),
            )
        if external_db:
            log("PostgreSQL: using external DATABASE_URL")
            env["DATABASE_URL"] = external_db
        else:
            was_running = _running_postmaster(_PgPaths(state_dir.resolve()))
            pg = start_postgres(state_dir)
            state = "already running" if was_running and was_running[0] == pg.pid else "started"
            log(f"PostgreSQL: {state}, pid {pg.pid}, {pg.url}")
            env.update(
                DATABASE_URL=pg.url, STACK_POSTGRES_PID=str(pg.pid), STACK_PG_BIN=str(pg.bin_dir)
            )
        # Fixed key order: the two service URLs first.
        order = [
            "KAFKA_BOOTSTRAP_SERVERS",
            "DATABASE_URL",
            "STACK_KAFKA_PID",
            "STACK_POSTGRES_PID",
            "STACK_PG_BIN",
            "STACK_KAFKA_LIBS",
        ]
        path = write_env(state_dir, {k: env[k] for k in order if k in env})
    if external_kafka and external_db:
        print("External services are used (KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL set);")
        print("started nothing.")
    print(f"stack up in {time.monotonic() - started:.1f}s; env: {path}")
    print(f"  KAFKA_BOOTSTRAP_SERVERS={env['KAFKA_BOOTSTRAP_SERVERS']}")
    print(f"  DATABASE_URL={env['DATABASE_URL']}")
    return 0


def cmd_down(state_dir: Path) -> int:
    with _locked(state_dir):
        stopped_kafka = stop_kafka(state_dir)
        print(f"Kafka: {'stopped' if stopped_kafka else 'not running (nothing to stop)'}")
        stopped_pg = stop_postgres(state_dir)
        print(f"PostgreSQL: {'stopped' if stopped_pg else 'not running (nothing to stop)'}")
    return 0


def cmd_status(state_dir: Path) -> int:
    kafka_ok = _kafka_status_line(state_dir)
    pg_ok = _pg_status_line(state_dir)
    return 0 if kafka_ok and pg_ok else 1


def _kafka_status_line(state_dir: Path) -> bool:
    external = _external(state_dir, "KAFKA_BOOTSTRAP_SERVERS", "STACK_KAFKA_PID")
    pid, bootstrap = kafka_status(state_dir)
    bootstrap = external or bootstrap
    cluster_id = None if external else _cluster_id(_KafkaPaths(state_dir.resolve()))
    try:
        answering = bool(bootstrap) and kafka_answers(bootstrap, cluster_id=cluster_id)
    except ImportError:
        print("Kafka: cannot check (aiokafka not importable; use the project venv)")
        return False
    except _WrongCluster as exc:
        print(f"Kafka: not ours answering: {exc}")
        return False
    where = "external" if external else (f"running, pid {pid}" if pid else "not running")
    state = "answering" if answering else "NOT answering"
    print(f"Kafka: {where}, {bootstrap or 'no address'}: {state}")
    return answering


def _pg_status_line(state_dir: Path) -> bool:
    external = _external(state_dir, "DATABASE_URL", "STACK_POSTGRES_PID")
    if external:
        pg_isready = shutil.which("pg_isready")
        if pg_isready is None:
            print("PostgreSQL: external DATABASE_URL (not checked: no pg_isready)")
            return True
        ok = subprocess.run([pg_isready, "-q", "-d", external, "-t", "3"]).returncode == 0
        print(f"PostgreSQL: external: {'answering' if ok else 'NOT answering'}")
        return ok
    paths = _PgPaths(state_dir.resolve())
    running = _running_postmaster(paths)
    bin_dir = find_pg_bin()
    if running is None or bin_dir is None:
        print("PostgreSQL: not running")
        return False
    pid, port = running
    ok = _pg_ready(bin_dir, port)
    state = "answering" if ok else "NOT answering"
    print(f"PostgreSQL: running, pid {pid}, 127.0.0.1:{port}: {state}")
    return ok


def cmd_env(state_dir: Path) -> int:
    path = state_dir / "env"
    if not path.is_file():
        print(f"no env file at {path}; run: python {Path(__file__).name} up", file=sys.stderr)
        return 1
    sys.stdout.write(path.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"state directory (default: {DEFAULT_STATE_DIR})",
    )
    args = parser.parse_args(argv)
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env}
    try:
        return commands[args.command](args.dir.resolve())
    except StackError as exc:
        print(f"stack {args.command} failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
