"""Local development/test stack: a real single-node Kafka (KRaft) and PostgreSQL.

Usage (from the repository root; ``make stack-up`` etc. run the same)::

    python -m deploy.local up|down|status|env [--dir .stack]

``up`` starts what is missing (idempotent) and writes ``<dir>/env``, a
shell-sourceable file with ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL``.
If those variables are already set in the environment, the matching service is
treated as external and not started.

Modules:

    cli          up/down/status/env and main()
    kafka        the broker: jars (pom.xml), ports, server.properties, start/stop/status
    kafka_ready  the readiness probe (the only code that needs aiokafka, imported lazily)
    postgres     the server: find/install, initdb, start/stop, the app database
    processes    shared helpers: ports, pids, the state-dir lock, atomic writes, log tails
    stack.py     the old entry point (python deploy/local/stack.py up), calls cli.main()

Importable API, also usable for a second, throwaway broker or server (the
tests start their own)::

    from deploy.local import kafka, postgres
    kafka.start_kafka(state_dir, port=None, controller_port=None, libs_dir=None, timeout=120)
    kafka.stop_kafka(state_dir, kill=False)
    kafka.wait_kafka_ready(bootstrap, timeout)
    kafka.fetch_kafka_libs(libs_dir)
    postgres.start_postgres(state_dir), postgres.stop_postgres(state_dir)

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

from .kafka import KafkaProcess, fetch_kafka_libs, kafka_status, start_kafka, stop_kafka
from .kafka_ready import kafka_answers, wait_kafka_ready
from .postgres import PostgresProcess, find_pg_bin, install_postgres, start_postgres, stop_postgres
from .processes import StackError

__all__ = [
    "KafkaProcess",
    "PostgresProcess",
    "StackError",
    "fetch_kafka_libs",
    "find_pg_bin",
    "install_postgres",
    "kafka_answers",
    "kafka_status",
    "start_kafka",
    "start_postgres",
    "stop_kafka",
    "stop_postgres",
    "wait_kafka_ready",
]
