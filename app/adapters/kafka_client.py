"""How every Kafka client of the product connects: built here, and only here.

`client_options(kafka)` gives the keyword arguments of any aiokafka client
(producer, consumer, admin): bootstrap servers, security protocol, SASL and the
TLS context. `faust_credentials(kafka)` gives the same to Faust. A unit test
(`tests.unit.test_kafka_client`) fails when a client is built without them.

Secrets are read when a client is built (a password file, the key of a client
certificate), not at import, and never kept in anything that is logged: the
password sits only in the dict handed to aiokafka.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to authenticate to them (KAFKA_* settings)."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    sasl_password_file: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True

    @classmethod
    def from_settings(cls, settings) -> "KafkaConnection":
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            sasl_password_file=settings.kafka_sasl_password_file,
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
            ssl_check_hostname=settings.kafka_ssl_check_hostname,
        )

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def password(self) -> str:
        """The SASL password, from its file when one is named (read now: a rotated file counts)."""
        if self.sasl_password_file:
            return Path(self.sasl_password_file).read_text().strip()
        return self.sasl_password

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context: the CA file (else the system's CAs), the client certificate for mTLS."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_cafile or None)
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None)
        return context


Kafka = KafkaConnection | str  # a bare bootstrap string: PLAINTEXT


def connection(kafka: Kafka) -> KafkaConnection:
    """A KafkaConnection; a bare bootstrap string is a PLAINTEXT connection (the local stack's tools, tests)."""
    return KafkaConnection(kafka) if isinstance(kafka, str) else kafka


def client_options(kafka: Kafka) -> dict:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    kafka = connection(kafka)
    options: dict = {"bootstrap_servers": kafka.bootstrap_servers, "security_protocol": kafka.security_protocol}
    if kafka.uses_tls:
        options["ssl_context"] = kafka.ssl_context()
    if kafka.uses_sasl:
        options.update(sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                       sasl_plain_password=kafka.password())
    return options


def faust_credentials(kafka: KafkaConnection):
    """Faust's `broker_credentials` for the same connection (None: PLAINTEXT).

    The password and the TLS context are read when Faust builds a client, not
    now: the App is defined at import, and a password file fixed while the
    worker waits for access (`app.adapters.kafka_access.wait_for_access`) must count.
    """
    import faust  # only the worker needs it; the local stack's tools use client_options alone
    from faust.types.auth import AuthProtocol, SASLMechanism

    if kafka.uses_sasl:
        class LazySASLCredentials(faust.SASLCredentials):
            protocol = AuthProtocol(kafka.security_protocol)
            mechanism = SASLMechanism(kafka.sasl_mechanism)
            username = kafka.sasl_username

            def __init__(self) -> None:  # noqa: D107  nothing read yet
                pass

            password = property(lambda self: kafka.password())
            ssl_context = property(lambda self: kafka.ssl_context())

            def __repr__(self) -> str:
                return f"<SASLCredentials: {kafka.sasl_mechanism} user {kafka.sasl_username}>"

        return LazySASLCredentials()
    if kafka.uses_tls:
        class LazySSLCredentials(faust.SSLCredentials):
            protocol = AuthProtocol.SSL

            def __init__(self) -> None:  # noqa: D107
                pass

            context = property(lambda self: kafka.ssl_context())

            def __repr__(self) -> str:
                return "<SSLCredentials>"

        return LazySSLCredentials()
    return None

