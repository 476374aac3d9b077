"""One function builds every Kafka client's connection (app/adapters/kafka_client.py); settings refuse
combinations that cannot work; secrets stay out of logs and reprs."""

from __future__ import annotations

import ast
import logging
import ssl
from pathlib import Path

import pytest
import trustme

from app.adapters.kafka_client import KafkaConnection, client_options, faust_credentials
from app.observability.logs import SecretFilter
from app.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
PRODUCT = ["app", "agents", "tables", "web", "bench", "deploy"]


def constructions():
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in CLIENTS:
                    yield path.relative_to(ROOT), node


def test_every_kafka_client_takes_its_connection_from_client_options():
    found = list(constructions())
    assert len(found) >= 10  # the walk sees them
    for path, call in found:
        spread = [k.value for k in call.keywords if k.arg is None]
        assert any(isinstance(v, ast.Call) and getattr(v.func, "id", "") == "client_options" for v in spread), (
            f"{path}:{call.lineno} builds a Kafka client without **client_options(...)")
        assert not any(k.arg == "bootstrap_servers" for k in call.keywords), f"{path}:{call.lineno}"


def test_the_chaos_program_too():
    tree = ast.parse((ROOT / "chaos" / "run.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") in CLIENTS]
    assert calls and all(any(k.arg is None for k in c.keywords) for c in calls)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    client = ca.issue_cert("worker")
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    client.private_key_pem.write_to_path(str(folder / "client.key"))
    (folder / "password").write_text("s3cret-from-file\n")
    return folder


def test_plaintext_is_the_bootstrap_alone():
    assert client_options("h:1") == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaConnection("h:1")) is None


def test_sasl_ssl_reads_the_password_file_and_verifies_the_broker(pki):
    kafka = KafkaConnection("h:1", "SASL_SSL", "SCRAM-SHA-512", "worker", sasl_password_file=str(pki / "password"),
                            ssl_cafile=str(pki / "ca.pem"))
    options = client_options(kafka)
    assert options["sasl_plain_password"] == "s3cret-from-file"
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    (pki / "password").write_text("rotated\n")
    credentials = faust_credentials(kafka)
    assert credentials.password == "rotated"  # read when Faust builds a client, not before
    assert "rotated" not in repr(credentials) and "s3cret" not in repr(kafka)
    (pki / "password").write_text("s3cret-from-file\n")


def test_mutual_tls_loads_the_client_certificate(pki):
    kafka = KafkaConnection("h:1", "SSL", ssl_cafile=str(pki / "ca.pem"), ssl_certfile=str(pki / "client.pem"),
                            ssl_keyfile=str(pki / "client.key"), ssl_check_hostname=False)
    context = client_options(kafka)["ssl_context"]
    assert not context.check_hostname
    assert faust_credentials(kafka).context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("env, variable", [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
     "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_PASSWORD": "p"},
     "KAFKA_SASL_USERNAME"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"},
     "KAFKA_SASL_PASSWORD_FILE"),
    ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "KAFKA_SSL_CAFILE"),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({"KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME"),
])
def test_combinations_that_cannot_work_name_the_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_a_password_set_twice_is_refused(pki):
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u",
           "KAFKA_SASL_PASSWORD": "p", "KAFKA_SASL_PASSWORD_FILE": str(pki / "password")}
    with pytest.raises(SettingsError, match="KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE"):
        Settings.from_env(env)
    with pytest.raises(SettingsError, match="DATABASE_PASSWORD_FILE"):
        Settings.from_env({"DATABASE_URL": "postgresql://u:pw@h/db", "DATABASE_PASSWORD_FILE": str(pki / "password")})
    with pytest.raises(SettingsError, match="KAFKA_SSL_KEYFILE"):
        Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(pki / "client.pem")})


def test_the_database_password_file_joins_the_url_when_asked(pki):
    settings = Settings.from_env({"DATABASE_URL": "postgresql://worker@db:5432/t?sslmode=verify-full",
                                  "DATABASE_PASSWORD_FILE": str(pki / "password")})
    assert settings.database_dsn() == "postgresql://worker:s3cret-from-file@db:5432/t?sslmode=verify-full"
    assert "s3cret" not in repr(settings)
    secret = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
                                "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "hunter22"})
    assert "hunter22" not in repr(secret)


def test_the_log_filter_masks_secrets_in_messages_and_tracebacks():
    secret_filter = SecretFilter(["hunter22"])
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "connect to %s failed", ("postgresql://u:hunter22@h",),
                               None)
    secret_filter.filter(record)
    assert record.getMessage() == "connect to postgresql://u:***@h failed"
    try:
        raise ValueError("bad password hunter22")
    except ValueError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), (type(exc), exc, exc.__traceback__))
    secret_filter.filter(record)
    assert record.exc_info is None and "hunter22" not in record.getMessage() and "bad password ***" in record.getMessage()
