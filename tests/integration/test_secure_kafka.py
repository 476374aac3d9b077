"""The whole API path against the local stack's secured listeners: SASL_SSL with SCRAM-SHA-512 and
mTLS, ACLs (StandardAuthorizer), PostgreSQL over verified TLS with a password file.

`make test` starts the stack, which writes .stack/secure.env, mtls.env and
admin.env (deploy/local/security.py). Each test grants exactly
app.ops.acls.worker_acls for its own names to the worker principals, with the
admin's credentials over SASL_SSL, and gives its database to the worker's role.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from yarl import URL

from app.adapters.kafka_client import KafkaConnection, client_options
from app.ops.acls import Acl, worker_acls
from deploy.local.processes import read_kv
from deploy.local.security import MTLS_USER, PG_WORKER_ROLE, WORKER_USER, grant
from tests.integration.conftest import wait_until
from tests.worker_process import REPO

STACK = Path(os.environ.get("STACK_DIR", REPO / ".stack"))


def stack_env(name: str) -> dict[str, str]:
    values = read_kv(STACK / name)
    if not values:
        pytest.fail(f"{STACK / name} is missing: run the suite with `make test`, whose stack writes it")
    return values


def connection(env: dict[str, str]) -> KafkaConnection:
    return KafkaConnection(
        env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_SECURITY_PROTOCOL"], env.get("KAFKA_SASL_MECHANISM", ""),
        env.get("KAFKA_SASL_USERNAME", ""), sasl_password_file=env.get("KAFKA_SASL_PASSWORD_FILE", ""),
        ssl_cafile=env.get("KAFKA_SSL_CAFILE", ""), ssl_certfile=env.get("KAFKA_SSL_CERTFILE", ""),
        ssl_keyfile=env.get("KAFKA_SSL_KEYFILE", ""))


def secrets_of(*envs: dict[str, str]) -> set[str]:
    files = {env[k] for env in envs for k in ("KAFKA_SASL_PASSWORD_FILE", "DATABASE_PASSWORD_FILE") if k in env}
    return {Path(f).read_text().strip() for f in files}


@pytest.fixture
def admin() -> KafkaConnection:
    return connection(stack_env("admin.env"))


@pytest.fixture
def secured(namespace, admin, server_url):
    """Grant the namespace's ACLs to both worker principals; hand its database to the worker's role."""

    async def setup(acls: list[Acl] | None = None) -> None:
        acls = acls if acls is not None else worker_acls(namespace.app_id, namespace.topic, f"{namespace.topic}.dlq")
        for principal in (f"User:{WORKER_USER}", f"User:{MTLS_USER}"):
            await grant(admin, principal, acls)
        conn = psycopg2.connect(str(URL(server_url).with_path("/postgres")))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'ALTER DATABASE "test_{namespace.suffix}" OWNER TO {PG_WORKER_ROLE}')
        conn.close()

    return setup


def worker_env(namespace, kind: str = "secure.env", **overrides: str) -> dict[str, str]:
    env = dict(stack_env(kind))
    secure_url = URL(env["DATABASE_URL"])
    env["DATABASE_URL"] = str(secure_url.with_path(f"/test_{namespace.suffix}"))
    return {**env, "DEAD_LETTER_TOPIC": f"{namespace.topic}.dlq", **overrides}


def start(workers, namespace, kind: str = "secure.env", **overrides: str):
    return workers(**worker_env(namespace, kind, **overrides))


async def post(http, worker, second: int) -> str:
    async with http.post(f"{worker.url}/api/v1/timestamp/2020-01-01T00:00:{second:02d}Z") as response:
        assert response.status == 200, await response.text()
        return (await response.json())["id"]


def cli(namespace, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env={**namespace.env(), **env, "LOG_LEVEL": "DEBUG"})


async def not_ready(http, worker) -> dict | None:
    """The readiness answer when it is 503 (the stand-in server answers while Kafka refuses the worker)."""
    try:
        async with http.get(f"{worker.url}/health/ready") as response:
            return (await response.json()) if response.status == 503 else None
    except OSError:
        return None


def assert_no_secret(texts, secrets: set[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, "a secret reached a log, an answer or the CLI's output"


async def test_the_api_path_runs_over_sasl_ssl_scram_and_verified_postgres_tls(
        workers, namespace, secured, admin, http, server_url):
    await secured()
    first = await start(workers, namespace).wait_ready(90)
    second = await start(workers, namespace).wait_ready(90)
    ids = [await post(http, first, i) for i in range(12)]
    await namespace.wait_for_records(len(ids))
    answers = []
    for command_id in ids:  # through the second worker: routed to the owner, or from PostgreSQL
        async with http.get(f"{second.url}/api/v1/timestamp/{command_id}") as response:
            assert response.status == 200, await response.text()
            answers.append(response.headers["X-Served-From"])
    assert "table" in answers  # the changelog runs secured too

    producer = AIOKafkaProducer(**client_options(admin), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(namespace.topic, b"not json", key=b"k")
    finally:
        await producer.stop()

    async def dead_letter():
        consumer = AIOKafkaConsumer(f"{namespace.topic}.dlq", **client_options(admin), auto_offset_reset="earliest")
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=2000)
            return [r for batch in batches.values() for r in batch]
        finally:
            await consumer.stop()

    [letter] = await wait_until(dead_letter, 60, "the dead letter")
    assert letter.value == b"not json"

    env = worker_env(namespace)
    audit = cli(namespace, env, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr

    conn = psycopg2.connect(str(URL(server_url).with_path("/postgres")))
    conn.autocommit = True
    empty = f"test_{namespace.suffix}_replay"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{empty}" OWNER {PG_WORKER_ROLE}')
    try:
        replay_env = {**env, "DATABASE_URL": str(URL(env["DATABASE_URL"]).with_path(f"/{empty}"))}
        migrate = cli(namespace, replay_env, "migrate")
        assert migrate.returncode == 0, migrate.stderr
        replay = cli(namespace, replay_env, "replay")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        with psycopg2.connect(str(URL(server_url).with_path(f"/{empty}"))) as copy, copy.cursor() as cur:
            cur.execute("SELECT id::text FROM timestamp_records")
            assert {row[0] for row in cur.fetchall()} == set(ids)
        copy.close()
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')
        conn.close()
    assert_no_secret([first.log(), second.log(), audit.stdout, audit.stderr, replay.stdout, replay.stderr],
                     secrets_of(stack_env("secure.env"), stack_env("admin.env")))


async def test_the_api_path_runs_over_mutual_tls(workers, namespace, secured, http):
    await secured()
    worker = await start(workers, namespace, "mtls.env").wait_ready(90)
    command_id = await post(http, worker, 1)
    await namespace.wait_for_records(1)
    async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
        assert response.status == 200


async def test_the_secured_listener_refuses_a_client_without_credentials():
    env = stack_env("secure.env")
    for options in ({"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]},  # plaintext to the TLS port
                    client_options(KafkaConnection(env["KAFKA_BOOTSTRAP_SERVERS"], "SSL",
                                                   ssl_cafile=env["KAFKA_SSL_CAFILE"]))):  # TLS, no SASL
        producer = AIOKafkaProducer(**options, request_timeout_ms=5000)
        with pytest.raises(Exception):
            await asyncio.wait_for(producer.start(), 20)
        await producer.stop()


async def test_a_wrong_password_keeps_the_worker_up_and_says_why_until_it_is_fixed(
        workers, namespace, secured, http, tmp_path):
    await secured()
    password_file = tmp_path / "password"
    password_file.write_text("not-the-password\n")
    worker = start(workers, namespace, KAFKA_SASL_PASSWORD_FILE=str(password_file))

    body = await wait_until(lambda: not_ready(http, worker), 30, "readiness DOWN with a reason")
    assert body["checks"]["kafka"]["error"].startswith("authentication failed")
    async with http.get(f"{worker.url}/health/live") as response:
        assert response.status == 200
    async with http.get(f"{worker.url}/metrics") as response:
        metrics_text = await response.text()
    secrets = secrets_of(stack_env("secure.env")) | {"not-the-password"}
    assert_no_secret([json.dumps(body), metrics_text], secrets)
    await asyncio.sleep(3)
    log = worker.log()
    assert worker.process.poll() is None
    attempts = log.count("Kafka does not accept this worker yet")
    assert attempts >= 2 and "Traceback" not in log
    assert log.count("SaslAuthenticationFailed") == attempts  # one line per attempt, aiokafka's folded in

    password_file.write_text(Path(stack_env("secure.env")["KAFKA_SASL_PASSWORD_FILE"]).read_text())
    await worker.wait_ready(90)  # no restart
    command_id = await post(http, worker, 2)
    await namespace.wait_for_records(1)
    assert command_id
    async with http.get(f"{worker.url}/health/ready") as response:
        ready = await response.text()
    async with http.get(f"{worker.url}/metrics") as response:
        metrics_text = await response.text()
    assert_no_secret([worker.log(), ready, metrics_text], secrets)


async def test_a_broker_certificate_from_another_ca_is_refused(workers, namespace, secured, http, tmp_path):
    import trustme

    await secured()
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    worker = start(workers, namespace, KAFKA_SSL_CAFILE=str(other_ca))

    body = await wait_until(lambda: not_ready(http, worker), 30, "readiness DOWN with a reason")
    error = body["checks"]["kafka"]["error"]
    assert error.startswith("TLS handshake failed") and "CERTIFICATE_VERIFY_FAILED" in error, error


async def test_a_missing_acl_is_named_and_nothing_is_acknowledged_past_it(
        workers, namespace, secured, admin, http):
    dead_letters = f"{namespace.topic}.dlq"
    acls = [acl if acl.name != dead_letters else Acl("TOPIC", dead_letters, "LITERAL", ("DESCRIBE", "CREATE"))
            for acl in worker_acls(namespace.app_id, namespace.topic, dead_letters)]
    await secured(acls)
    worker = await start(workers, namespace).wait_ready(90)
    producer = AIOKafkaProducer(**client_options(admin), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(namespace.topic, b"not json", key=b"k", partition=0)
        await producer.send_and_wait(namespace.topic, json.dumps(
            {"command_id": str(uuid.uuid4()), "event_timestamp": "2020-01-01T00:00:00Z"}).encode(),
            key=b"k", partition=0)
    finally:
        await producer.stop()

    async def denial_logged():
        return f"Kafka denies this worker Write on topic {dead_letters}" in worker.log()

    await wait_until(denial_logged, 60, "the denial named in the log")
    assert "TopicAuthorizationFailedError" in worker.log()
    await asyncio.sleep(3)
    assert namespace.query("SELECT count(*) FROM processed_events")[0][0] == 0  # nothing past the refused letter
    assert namespace.query("SELECT count(*) FROM timestamp_records")[0][0] == 0
