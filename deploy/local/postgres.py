"""The local stack's PostgreSQL server: Debian's binaries, a cluster in the state dir.

Finds the server binaries under /usr/lib/postgresql/*/bin (installs Debian's
``postgresql`` package when there are none and we are root), runs initdb once,
starts and stops the postmaster with pg_ctl (as the ``postgres`` OS user when
run as root) and creates the application database. The cluster lives under
``<state dir>/postgres/`` plus ``postgres.pid`` and ``postgres.log``.

This is a dev/test server, tuned for speed rather than durability: it runs
with ``fsync=off`` unless ``STACK_PG_FSYNC=on`` is set.
"""

import dataclasses
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .processes import (
    StackError,
    cmdline,
    free_ports,
    log,
    pid_alive,
    port_is_free,
    read_pid,
    run,
    wait_gone,
    with_log_tail,
    write_atomic,
)

DEFAULT_PG_PORT = 5432
DATABASE_NAME = "timestamps"
PG_SUPERUSER = "postgres"
PG_OS_USER = "postgres"
PG_TIMEOUT = 60.0
# A unix socket path must fit in sun_path (108 bytes including the NUL).
MAX_SOCKET_PATH = 100


@dataclasses.dataclass
class PostgresProcess:
    """A postmaster started (or found running) in state_dir."""

    pid: int
    port: int
    url: str
    bin_dir: Path


@dataclasses.dataclass
class PgPaths:
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
    run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    # The package also creates and may start a system cluster on 5432; we
    # leave that alone and run our own cluster in the state dir.
    # Wait for a concurrent apt/dpkg run instead of failing on its lock.
    lock_wait = ["-o", "DPkg::Lock::Timeout=120"]
    cmd = ["apt-get", *lock_wait, "install", "-y", "-qq", "postgresql"]
    run(cmd, "apt-get install postgresql", env=env)
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
        run(
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


def _prepare_pg_dirs(paths: PgPaths) -> None:
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


def _initdb(paths: PgPaths, bin_dir: Path) -> None:
    """Create the cluster once (a finished one has PG_VERSION)."""
    if (paths.data / "PG_VERSION").is_file():
        return
    # A data dir without PG_VERSION is debris of an interrupted initdb.
    shutil.rmtree(paths.data, ignore_errors=True)
    log(f"initdb {paths.data}")
    initdb, data = str(bin_dir / "initdb"), str(paths.data)
    base = [initdb, "-D", data, "-U", PG_SUPERUSER, "--auth=trust", "--encoding=UTF8"]
    try:
        run(_as_pg_user([*base, "--locale=C.UTF-8"]), "initdb", cwd=paths.home)
    except StackError as exc:
        # Minimal systems may lack the C.UTF-8 locale.
        log(f"initdb with C.UTF-8 failed, retrying with --no-locale: {exc}")
        shutil.rmtree(paths.data, ignore_errors=True)
        run(_as_pg_user([*base, "--no-locale"]), "initdb --no-locale", cwd=paths.home)


def _choose_pg_port(paths: PgPaths) -> int:
    """Recorded port, else 5432 if free, else any free port."""
    recorded = read_pid(paths.port_file)  # same format: a number on line 1
    if recorded is not None:
        if not port_is_free(recorded):
            raise StackError(
                f"PostgreSQL port {recorded} recorded in {paths.port_file} is in use by "
                f"another process; free it, or delete that file to pick a new port"
            )
        return recorded
    return DEFAULT_PG_PORT if port_is_free(DEFAULT_PG_PORT) else free_ports(1)[0]


def running_postmaster(paths: PgPaths) -> tuple[int, int] | None:
    """(pid, port) of this data dir's live postmaster, from postmaster.pid."""
    try:
        lines = (paths.data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    argv = cmdline(pid)
    ours = (
        pid_alive(pid)
        and bool(argv)
        and os.path.basename(argv[0]) in ("postgres", "postmaster")
        and str(paths.data) in " ".join(argv)
    )
    return (pid, port) if ours else None


def pg_ready(bin_dir: Path, port: int) -> bool:
    proc = subprocess.run(
        [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "2"],
        capture_output=True,
    )
    return proc.returncode == 0


def _wait_pg_ready(paths: PgPaths, bin_dir: Path, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pg_ready(bin_dir, port):
        if time.monotonic() > deadline:
            message = f"PostgreSQL on 127.0.0.1:{port} not ready after {timeout:.0f}s"
            raise StackError(with_log_tail(message, paths.log_file))
        time.sleep(0.5)


def _tls_files(paths: PgPaths) -> tuple[Path, Path]:
    return paths.home / "server.crt", paths.home / "server.key"


def _install_tls(paths: PgPaths, cert: Path, key: Path) -> bool:
    """Copy the server certificate and key where the postgres user owns them (it refuses a key others
    can read); True when they changed."""
    target_cert, target_key = _tls_files(paths)
    if target_cert.is_file() and target_key.is_file() and target_cert.read_bytes() == cert.read_bytes():
        return False
    for source, target in ((cert, target_cert), (key, target_key)):
        shutil.copyfile(source, target)
        target.chmod(0o600)
        user = _pg_user()
        if user is not None:
            os.chown(target, user.pw_uid, user.pw_gid)
    return True


def _pg_ctl_start(paths: PgPaths, bin_dir: Path, port: int) -> None:
    # pg_ctl hands -o to a shell, so quote the path.
    options = [
        f"-p {port}",
        f"-k {shlex.quote(str(paths.socket_dir))}",
        "-c listen_addresses=127.0.0.1",
        "-c max_connections=200",
    ]
    cert, key = _tls_files(paths)
    if cert.is_file() and key.is_file():
        options += ["-c ssl=on", f"-c ssl_cert_file={shlex.quote(str(cert))}",
                    f"-c ssl_key_file={shlex.quote(str(key))}"]
    # Dev/test stack: trade crash safety for speed unless asked otherwise.
    if os.environ.get("STACK_PG_FSYNC", "").lower() != "on":
        options.append("-c fsync=off")
    pg_ctl, data, log_file = str(bin_dir / "pg_ctl"), str(paths.data), str(paths.log_file)
    wait = ["-w", "-t", str(int(PG_TIMEOUT))]
    cmd = [pg_ctl, "-D", data, "-l", log_file, "-o", " ".join(options), *wait, "start"]
    try:
        run(_as_pg_user(cmd), "pg_ctl start", cwd=paths.home)
    except StackError as exc:
        raise StackError(with_log_tail(exc, paths.log_file)) from exc


def _ensure_database(bin_dir: Path, port: int, name: str = DATABASE_NAME) -> None:
    conn = ["-h", "127.0.0.1", "-p", str(port), "-U", PG_SUPERUSER]
    query = f"SELECT 1 FROM pg_database WHERE datname='{name}'"
    psql = [str(bin_dir / "psql"), *conn, "-d", "postgres", "-tAc", query]
    exists = run(psql, f"checking for database {name}").stdout.strip()
    if exists != "1":
        log(f"creating database {name}")
        run([str(bin_dir / "createdb"), *conn, name], f"creating database {name}")


def _pg_bin_for(paths: PgPaths) -> Path:
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


HBA_BEGIN, HBA_END = "# deploy.local secure role: begin", "# deploy.local secure role: end"


def hba_lines(role: str) -> str:
    """pg_hba.conf lines put first: the role only over TLS with a SCRAM password; the rest stays trust."""
    return (f"{HBA_BEGIN}\nhostssl all {role} 127.0.0.1/32 scram-sha-256\n"
            f"host    all {role} 127.0.0.1/32 reject\n{HBA_END}\n")


def _ensure_hba(paths: PgPaths, role: str) -> bool:
    hba = paths.data / "pg_hba.conf"
    text = hba.read_text()
    if HBA_BEGIN in text:
        return False
    hba.write_text(hba_lines(role) + text)
    return True


def _psql(bin_dir: Path, port: int, sql: str, what: str, database: str = "postgres") -> str:
    conn = ["-h", "127.0.0.1", "-p", str(port), "-U", PG_SUPERUSER, "-d", database]
    return run([str(bin_dir / "psql"), *conn, "-v", "ON_ERROR_STOP=1", "-tAc", sql], what).stdout.strip()


def _ensure_secure_role(bin_dir: Path, port: int, role: str, password: str, database: str) -> None:
    """The role with its password (set again each time: the file is the truth) and a database it owns."""
    exists = _psql(bin_dir, port, f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'", f"checking role {role}")
    verb = "ALTER" if exists == "1" else "CREATE"
    # The password is URL-safe random text from the stack itself (no quote can occur).
    _psql(bin_dir, port, f"{verb} ROLE {role} LOGIN PASSWORD '{password}'", f"{verb.lower()} role {role}")
    if _psql(bin_dir, port, f"SELECT 1 FROM pg_database WHERE datname = '{database}'", "checking database") != "1":
        _psql(bin_dir, port, f'CREATE DATABASE "{database}" OWNER {role}', f"creating database {database}")


def _ssl_on(bin_dir: Path, port: int) -> bool:
    return _psql(bin_dir, port, "SHOW ssl", "SHOW ssl") == "on"


def start_postgres(state_dir: Path, tls: tuple[Path, Path] | None = None,
                   secure_role: tuple[str, str, str] | None = None) -> PostgresProcess:
    """Start (or find running) this state dir's PostgreSQL; ensure the app database.

    With `tls` (certificate, key) it serves TLS; with `secure_role` (role, password, database) that role
    may connect only over TLS with its password, and owns that database.
    """
    paths = PgPaths(Path(state_dir).resolve())
    bin_dir = _pg_bin_for(paths)
    running = running_postmaster(paths)
    if tls is not None:
        _prepare_pg_dirs(paths)
        changed = _install_tls(paths, *tls)
        if running is not None and (changed or not _ssl_on(bin_dir, running[1])):
            log("PostgreSQL: restarting to serve TLS")
            stop_postgres(state_dir)
            running = None
    if running is None:
        _prepare_pg_dirs(paths)
        _initdb(paths, bin_dir)
        port = _choose_pg_port(paths)
        write_atomic(paths.port_file, f"{port}\n")
        log(f"starting PostgreSQL on 127.0.0.1:{port}")
        _pg_ctl_start(paths, bin_dir, port)
        running = running_postmaster(paths)
        if running is None:
            raise StackError(f"pg_ctl reported success but no postmaster runs for {paths.data}")
    pid, port = running
    write_atomic(paths.pid_file, f"{pid}\n")
    _wait_pg_ready(paths, bin_dir, port, PG_TIMEOUT)
    _ensure_database(bin_dir, port)
    if secure_role is not None:
        if _ensure_hba(paths, secure_role[0]):
            _psql(bin_dir, port, "SELECT pg_reload_conf()", "reloading pg_hba.conf")
        _ensure_secure_role(bin_dir, port, *secure_role)
    url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"
    return PostgresProcess(pid, port, url, bin_dir)


def stop_postgres(state_dir: Path) -> bool:
    """Stop this state dir's postmaster (pg_ctl stop -m fast); True if one was stopped."""
    paths = PgPaths(Path(state_dir).resolve())
    running = running_postmaster(paths)
    recorded = read_pid(paths.pid_file)
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
        run(_as_pg_user(cmd), "pg_ctl stop", cwd=paths.home)
    except StackError as exc:
        log(f"{exc}; falling back to SIGTERM of pid {pid}")
        if running_postmaster(paths) is not None:
            os.kill(pid, signal.SIGTERM)  # "smart" shutdown
            if not wait_gone(pid, 30):
                raise StackError(f"PostgreSQL pid {pid} still running 30s after SIGTERM") from exc
    paths.pid_file.unlink(missing_ok=True)
    return True
