"""Local development/test stack: a real single-node Kafka (KRaft) and PostgreSQL.

The command line of deploy.local (``python -m deploy.local up|down|status|env
[--dir .stack]``): ``up`` starts what is missing (idempotent) and writes
``<dir>/env``; ``down`` stops both servers; ``status`` checks that they
answer; ``env`` prints the env file. If ``KAFKA_BOOTSTRAP_SERVERS`` or
``DATABASE_URL`` is already set in the environment, the matching service is
treated as external and not started.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .kafka import KafkaPaths, kafka_status, read_cluster_id, start_kafka, stop_kafka
from .kafka_ready import WrongCluster, kafka_answers
from .postgres import (
    PgPaths,
    find_pg_bin,
    pg_ready,
    running_postmaster,
    start_postgres,
    stop_postgres,
)
from .processes import StackError, locked, log, read_kv, write_atomic
from .security import (
    MTLS_USER,
    PG_SECURE_DATABASE,
    PG_WORKER_ROLE,
    WORKER_USER,
    SecurePaths,
    ensure_certificates,
    env_files,
    grant,
    password,
    write_env_files,
)

REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_DIR / ".stack"


def write_env(state_dir: Path, values: dict[str, str]) -> Path:
    """Write KEY=value lines (shell-quoted where needed) atomically."""
    body = "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())
    path = Path(state_dir) / "env"
    # Still names stack.py (now a shim for this CLI) so the file is unchanged.
    write_atomic(
        path, "# Written by deploy/local/stack.py up; source it or read KEY=value.\n" + body
    )
    return path


def _external(state_dir: Path, key: str, managed_marker: str) -> str | None:
    """The environment's value for key if it points at a service we do not manage.

    A value equal to the one our own env file recorded for a service we
    started is ours (the shell has merely sourced .stack/env), not external.
    """
    value = os.environ.get(key)
    recorded = read_kv(state_dir / "env")
    if value and recorded.get(key) == value and managed_marker in recorded:
        return None
    return value or None


def cmd_up(state_dir: Path) -> int:
    started = time.monotonic()
    external_kafka = _external(state_dir, "KAFKA_BOOTSTRAP_SERVERS", "STACK_KAFKA_PID")
    external_db = _external(state_dir, "DATABASE_URL", "STACK_POSTGRES_PID")
    env: dict[str, str] = {}
    with locked(state_dir):
        if external_kafka:
            log(f"Kafka: using external KAFKA_BOOTSTRAP_SERVERS={external_kafka}")
            env["KAFKA_BOOTSTRAP_SERVERS"] = external_kafka
        else:
            was_running = kafka_status(state_dir)[0]
            kafka = start_kafka(state_dir, prefer_default_ports=True, secure=True)
            state = "already running" if was_running == kafka.pid else "started"
            log(f"Kafka: {state}, pid {kafka.pid}, {kafka.bootstrap}")
            env.update(
                KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap,
                STACK_KAFKA_PID=str(kafka.pid),
                STACK_KAFKA_LIBS=str(KafkaPaths(state_dir.resolve()).libs),
            )
        if external_db:
            log("PostgreSQL: using external DATABASE_URL")
            env["DATABASE_URL"] = external_db
        else:
            was_running = running_postmaster(PgPaths(state_dir.resolve()))
            secure = SecurePaths(state_dir.resolve())
            ensure_certificates(secure)
            role_password = password(secure, f"postgres-{PG_WORKER_ROLE}")
            pg = start_postgres(state_dir, tls=(secure.cert("postgres"), secure.key("postgres")),
                                secure_role=(PG_WORKER_ROLE, role_password, PG_SECURE_DATABASE))
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
        if not external_kafka and not external_db:
            _secure_access(state_dir, kafka, pg.port)
    if external_kafka and external_db:
        print("External services are used (KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL set);")
        print("started nothing.")
    print(f"stack up in {time.monotonic() - started:.1f}s; env: {path}")
    print(f"  KAFKA_BOOTSTRAP_SERVERS={env['KAFKA_BOOTSTRAP_SERVERS']}")
    print(f"  DATABASE_URL={env['DATABASE_URL']}")
    return 0


def _secure_access(state_dir: Path, kafka, pg_port: int) -> None:
    """The worker principals' ACLs (exactly app.ops.acls.worker_acls) and the secured env files."""
    import asyncio

    from app.ops.acls import worker_acls

    secure = SecurePaths(state_dir.resolve())
    acls = worker_acls("timestamp-pipeline", "timestamp.command.v1", "timestamp.command.v1.dlq")
    for principal in (f"User:{WORKER_USER}", f"User:{MTLS_USER}"):
        # Over PLAINTEXT, whose User:ANONYMOUS is a super user of the local broker.
        asyncio.run(grant(kafka.bootstrap, principal, acls))
    write_env_files(secure, env_files(secure, kafka.sasl_ssl_port, kafka.ssl_port, pg_port))
    log(f"Kafka: SASL_SSL on 127.0.0.1:{kafka.sasl_ssl_port}, mTLS on 127.0.0.1:{kafka.ssl_port}; "
        f"env files {state_dir / 'secure.env'}, {state_dir / 'mtls.env'}, {state_dir / 'admin.env'}")


def cmd_down(state_dir: Path) -> int:
    with locked(state_dir):
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
    cluster_id = None if external else read_cluster_id(KafkaPaths(state_dir.resolve()))
    try:
        answering = bool(bootstrap) and kafka_answers(bootstrap, cluster_id=cluster_id)
    except ImportError:
        print("Kafka: cannot check (aiokafka not importable; use the project venv)")
        return False
    except WrongCluster as exc:
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
    paths = PgPaths(state_dir.resolve())
    running = running_postmaster(paths)
    bin_dir = find_pg_bin()
    if running is None or bin_dir is None:
        print("PostgreSQL: not running")
        return False
    pid, port = running
    ok = pg_ready(bin_dir, port)
    state = "answering" if ok else "NOT answering"
    print(f"PostgreSQL: running, pid {pid}, 127.0.0.1:{port}: {state}")
    return ok


def cmd_env(state_dir: Path) -> int:
    path = state_dir / "env"
    if not path.is_file():
        print(f"no env file at {path}; run: python -m deploy.local up", file=sys.stderr)
        return 1
    sys.stdout.write(path.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local", description=__doc__.split("\n\n")[0]
    )
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
