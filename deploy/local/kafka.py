"""The local stack's Kafka broker: one KRaft node (broker and controller) in a JVM.

The jars come from Maven Central as listed in deploy/local/pom.xml; the
broker's files live under ``<state dir>/kafka/`` plus ``kafka.pid`` and
``kafka.log``. Also usable for a second, throwaway broker (the tests' own)::

    start_kafka(state_dir, port=None, controller_port=None, libs_dir=None, timeout=120)
    stop_kafka(state_dir, kill=False)
    wait_kafka_ready(bootstrap, timeout)
    fetch_kafka_libs(libs_dir)
"""

import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .kafka_ready import wait_kafka_ready
from .security import (
    SecurePaths,
    add_scram_users,
    ensure_certificates,
    scram_format_arguments,
    write_keystore,
)
from .security import server_properties as secure_server_properties
from .processes import (
    StackError,
    cmdline,
    forget_child,
    free_ports,
    log,
    pid_alive,
    port_is_free,
    read_kv,
    read_pid,
    register_child,
    run,
    wait_gone,
    with_log_tail,
    write_atomic,
)

POM_FILE = Path(__file__).resolve().parent / "pom.xml"
DEFAULT_KAFKA_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
KAFKA_STOP_TIMEOUT = 30.0


@dataclasses.dataclass
class KafkaProcess:
    """A broker started (or found running) in state_dir."""

    pid: int
    port: int
    bootstrap: str
    state_dir: Path
    controller_port: int = 0
    sasl_ssl_port: int = 0  # 0: started without the secured listeners
    ssl_port: int = 0


@dataclasses.dataclass
class KafkaPaths:
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
    run(cmd, "fetching Kafka jars with Maven")
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


def _read_ports(paths: KafkaPaths) -> tuple[int, int] | None:
    return _read_port_pair(paths, "port", "controller_port")


def _read_port_pair(paths: KafkaPaths, first: str, second: str) -> tuple[int, int] | None:
    values = read_kv(paths.ports)
    try:
        return int(values[first]), int(values[second])
    except (KeyError, ValueError):
        return None


def _choose_kafka_ports(
    paths: KafkaPaths, port: int | None, controller_port: int | None, prefer_defaults: bool
) -> tuple[int, int]:
    """Explicit ports win, then the recorded ones, then defaults/free ports."""
    recorded = _read_ports(paths)
    if port is None and controller_port is None and recorded:
        port, controller_port = recorded
        for p in recorded:
            if not port_is_free(p):
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
        and all(map(port_is_free, defaults))
    ):
        return defaults
    for p in (port, controller_port):
        if p is not None and not port_is_free(p):
            raise StackError(f"Kafka port {p} was requested but is in use by another process")
    free = iter(free_ports(2))
    chosen = (port or next(free), controller_port or next(free))
    if chosen[0] == chosen[1]:
        raise StackError(f"Kafka port and controller port must differ (both {chosen[0]})")
    return chosen


def server_properties(paths: KafkaPaths, port: int, controller_port: int,
                      secure_ports: tuple[int, int] | None = None,
                      extra_listeners: dict[str, tuple[int, int]] | None = None) -> str:
    """server.properties; with secure_ports (SASL_SSL, SSL) also the secured listeners (deploy/local/security.py).

    extra_listeners: name -> (port, advertised port), more PLAINTEXT listeners
    that advertise another port than the one they listen on. The chaos run puts a
    proxy in front of each (chaos/run.py): a client bootstrapped through the proxy
    is told to reconnect to the advertised port, the proxy's, and so stays behind it.
    """
    listeners = [f"PLAINTEXT://127.0.0.1:{port}"]
    if secure_ports:
        # Each listener advertises its own address: clients reconnect to what is advertised.
        listeners += [f"SASL_SSL://127.0.0.1:{secure_ports[0]}", f"SSL://127.0.0.1:{secure_ports[1]}"]
    advertised = list(listeners)
    extra = dict(extra_listeners or {})
    for name, (listen, shown) in extra.items():
        if not name.isalnum() or not name.isupper() or name in ("PLAINTEXT", "CONTROLLER", "SSL", "SASL_SSL"):
            raise StackError(f"extra Kafka listener name {name!r} must be upper-case letters/digits, not a reserved one")
        listeners.append(f"{name}://127.0.0.1:{listen}")
        advertised.append(f"{name}://127.0.0.1:{shown}")
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{controller_port}"]),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        + (",SASL_SSL:SASL_SSL,SSL:SSL" if secure_ports else "")
        + "".join(f",{name}:PLAINTEXT" for name in extra),
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
        # broker.session.timeout.ms and broker.heartbeat.interval.ms stay at
        # Kafka's defaults (9 s, 2 s). The controller drops a heartbeat that
        # waited half the interval in its queue; with a 1 s interval and a
        # 3 s session, the broker fenced itself whenever the shared 2 cores
        # were busy (make soak), and every partition lost its leader.
        # The log cleaner looks for work every 2 s (default 15 s), so tests and the recovery bench see a
        # compacted changelog soon; what it compacts, and when, is the topic's own configuration.
        "log.cleaner.backoff.ms": "2000",
    }
    if secure_ports:
        settings.update(secure_server_properties(SecurePaths(paths.state_dir)))
    # Still names stack.py (now a shim for deploy.local) so the file is unchanged.
    lines = ["# Generated by deploy/local/stack.py; rewritten on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("java is needed to run Kafka but is not on PATH (install a JDK 17)")
    return java


def _format_storage(paths: KafkaPaths, libs_dir: Path, scram: list[str] = ()) -> bool:
    """Format the KRaft log dir once (a formatted dir has meta.properties), with `scram` users; True if now."""
    if (paths.data / "meta.properties").is_file():
        return False
    classpath = f"{libs_dir}/*"
    java = _java()
    tool = [java, "-cp", classpath, "kafka.tools.StorageTool"]
    what = "generating a Kafka cluster id (StorageTool random-uuid)"
    cluster_id = run([*tool, "random-uuid"], what).stdout.split()[-1]
    what = f"formatting Kafka storage in {paths.data} (StorageTool format)"
    run([*tool, "format", "-t", cluster_id, "-c", str(paths.properties), *scram], what)
    return True


def _is_our_broker(pid: int, paths: KafkaPaths) -> bool:
    """True if pid is a live Kafka JVM started with this state dir's config."""
    argv = cmdline(pid)
    return (
        pid_alive(pid)
        and bool(argv)
        and os.path.basename(argv[0]).startswith("java")
        and "kafka.Kafka" in argv
        and str(paths.properties.resolve()) in argv
    )


def read_cluster_id(paths: KafkaPaths) -> str | None:
    """The cluster id StorageTool wrote into the data dir."""
    return read_kv(paths.data / "meta.properties").get("cluster.id")


def _running_broker(paths: KafkaPaths) -> int | None:
    pid = read_pid(paths.pid_file)
    return pid if pid is not None and _is_our_broker(pid, paths) else None


def _spawn_broker(paths: KafkaPaths, libs_dir: Path) -> int:
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
    register_child(proc)
    write_atomic(paths.pid_file, f"{proc.pid}\n")
    return proc.pid


def start_kafka(
    state_dir: Path,
    port: int | None = None,
    controller_port: int | None = None,
    libs_dir: Path | None = None,
    timeout: float = 120,
    *,
    prefer_default_ports: bool = False,
    secure: bool = False,
    extra_listeners: dict[str, tuple[int, int]] | None = None,
) -> KafkaProcess:
    """Start a single-node KRaft broker with its state in state_dir; wait until ready.

    Reuses state_dir's formatted data and recorded ports on a restart, and
    returns the running broker if one from state_dir is already up. Without
    explicit or recorded ports, free ports are picked (9092/9093 first when
    prefer_default_ports). libs_dir defaults to state_dir/kafka/libs and is
    fetched with Maven if empty. On failure the broker is stopped and
    StackError carries the end of kafka.log. The broker runs in its own
    session and outlives the caller: stop it with stop_kafka().
    extra_listeners (name -> (port, advertised port)) adds PLAINTEXT listeners
    advertising another port (see server_properties); pass them again on every
    start, they are not recorded. The default stack has none.
    """
    paths = KafkaPaths(Path(state_dir).resolve())
    paths.home.mkdir(parents=True, exist_ok=True)
    secure_paths = SecurePaths(paths.state_dir)
    remade = secure and ensure_certificates(secure_paths)
    running = _running_broker(paths)
    recorded = _read_ports(paths)
    recorded_secure = _read_secure_ports(paths)
    if running is not None and secure and (remade or recorded_secure is None or not _has_secure_listeners(paths)):
        log("Kafka: restarting the broker to open its SASL_SSL and SSL listeners")
        stop_kafka(paths.state_dir)
        running = None
    if running is not None and recorded:
        bootstrap = f"127.0.0.1:{recorded[0]}"
        wait_kafka_ready(
            bootstrap, timeout, alive=lambda: pid_alive(running), cluster_id=read_cluster_id(paths)
        )
        return KafkaProcess(running, recorded[0], bootstrap, paths.state_dir, recorded[1],
                            *(recorded_secure if secure and recorded_secure else ()))
    if running is not None:
        raise StackError(f"Kafka pid {running} runs from {paths.home} but {paths.ports} is missing")

    libs = fetch_kafka_libs(Path(libs_dir) if libs_dir else paths.libs)
    kport, cport = _choose_kafka_ports(paths, port, controller_port, prefer_default_ports)
    secure_ports = _choose_secure_ports(recorded_secure, (kport, cport)) if secure else None
    extra = f"sasl_ssl_port={secure_ports[0]}\nssl_port={secure_ports[1]}\n" if secure_ports else ""
    write_atomic(paths.ports, f"port={kport}\ncontroller_port={cport}\n{extra}")
    if secure:
        write_keystore(secure_paths)
    write_atomic(paths.properties, server_properties(paths, kport, cport, secure_ports, extra_listeners))
    write_atomic(paths.log4j, LOG4J_PROPERTIES)
    paths.data.mkdir(parents=True, exist_ok=True)
    if _format_storage(paths, libs, scram_format_arguments(secure_paths) if secure else []) and secure:
        write_atomic(paths.home / "scram-users", "added at format\n")

    pid = _spawn_broker(paths, libs)
    bootstrap = f"127.0.0.1:{kport}"
    try:
        wait_kafka_ready(
            bootstrap, timeout, alive=lambda: pid_alive(pid), cluster_id=read_cluster_id(paths)
        )
    except (TimeoutError, StackError) as exc:
        # Do not leave a half-started broker behind on failure.
        stop_kafka(paths.state_dir, kill=True)
        raise StackError(with_log_tail(exc, paths.log_file)) from exc
    if secure and not (paths.home / "scram-users").is_file():  # storage formatted by an older stack
        add_scram_users(secure_paths, libs, bootstrap)
        write_atomic(paths.home / "scram-users", "added with ConfigCommand\n")
    return KafkaProcess(pid, kport, bootstrap, paths.state_dir, cport, *(secure_ports or ()))


def _read_secure_ports(paths: KafkaPaths) -> tuple[int, int] | None:
    return _read_port_pair(paths, "sasl_ssl_port", "ssl_port")


def _choose_secure_ports(recorded: tuple[int, int] | None, taken: tuple[int, int]) -> tuple[int, int]:
    """The recorded SASL_SSL and SSL ports when free, else two free ones."""
    if recorded and all(map(port_is_free, recorded)):
        return recorded
    chosen = [p for p in free_ports(4) if p not in taken][:2]
    return chosen[0], chosen[1]


def _has_secure_listeners(paths: KafkaPaths) -> bool:
    return "SASL_SSL://" in read_kv(paths.properties).get("listeners", "")


def stop_kafka(state_dir: Path, kill: bool = False) -> bool:
    """Stop the broker recorded in state_dir/kafka.pid; True if one was stopped.

    SIGTERM (clean shutdown, up to 30 s, then SIGKILL), or SIGKILL at once
    when kill=True. Only a process verified to be this state dir's Kafka JVM
    is signalled.
    """
    paths = KafkaPaths(Path(state_dir).resolve())
    pid = read_pid(paths.pid_file)
    if pid is None:
        return False
    stopped = False
    if _is_our_broker(pid, paths):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if not wait_gone(pid, 10 if kill else KAFKA_STOP_TIMEOUT):
            os.kill(pid, signal.SIGKILL)
            if not wait_gone(pid, 10):
                raise StackError(f"Kafka pid {pid} did not exit after SIGKILL")
        stopped = True
    forget_child(pid)
    paths.pid_file.unlink(missing_ok=True)
    return stopped


def kafka_status(state_dir: Path) -> tuple[int | None, str | None]:
    """(pid of our running broker or None, bootstrap from recorded ports or None)."""
    paths = KafkaPaths(Path(state_dir).resolve())
    recorded = _read_ports(paths)
    return _running_broker(paths), (f"127.0.0.1:{recorded[0]}" if recorded else None)
