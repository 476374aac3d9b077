"""Settings, read once from environment variables and validated at start-up.

Every setting is an environment variable; a bad value stops the process with
an error that names the variable. `docs/configuration.md` lists them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Callable, Mapping


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be zero or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _retention_ms(text: str) -> int:
    value = int(text)
    if value < -1 or value == 0:
        raise ValueError("must be -1 (unlimited) or a positive number of milliseconds")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _store_url(text: str) -> str:
    if not (text.startswith("memory://") or text.startswith("rocksdb://")):
        raise ValueError("must be memory:// or rocksdb://")
    return text


def _database_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    return text


def _bootstrap_servers(text: str) -> str:
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts or any(":" not in h for h in hosts):
        raise ValueError("must be a comma-separated list of host:port")
    return ",".join(hosts)


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    parse: Callable[[str], object]
    help: str


# One row per environment variable: name, default, parser, meaning.
SETTINGS: dict[str, Setting] = {
    s.env: s
    for s in (
        Setting("APP_ID", "timestamp-pipeline", _text,
                "Faust application id: the consumer group and the prefix of internal topics."),
        Setting("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", _bootstrap_servers,
                "Kafka brokers, host:port[,host:port...]."),
        Setting("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/timestamps", _database_url,
                "PostgreSQL connection URL (libpq form)."),
        Setting("COMMAND_TOPIC", "timestamp.command.v1", _text,
                "Topic of timestamp commands: the golden record."),
        Setting("COMMAND_TOPIC_PARTITIONS", "8", _positive_int,
                "Partitions of the command topic and of the table changelog (upper bound on workers)."),
        Setting("DEAD_LETTER_TOPIC", "{command_topic}.dlq", _text,
                "Topic of messages that can never be processed; {command_topic} is replaced."),
        Setting("KAFKA_REPLICATION_FACTOR", "1", _positive_int,
                "Replication factor of the topics this service creates (3 on a production cluster)."),
        Setting("KAFKA_SESSION_TIMEOUT_SECONDS", "10", _positive_float,
                "How soon the group notices a dead worker and hands its partitions to others."),
        Setting("COMMAND_TOPIC_RETENTION_MS", "-1", _retention_ms,
                "retention.ms of the command topic when this service creates it; -1 keeps it forever."),
        Setting("BATCH_SIZE", "500", _positive_int,
                "Most events written to PostgreSQL in one transaction."),
        Setting("BATCH_MAX_WAIT_SECONDS", "0.2", _positive_float,
                "Longest a partial batch waits for more events before it is written."),
        Setting("TABLE_STORE", "rocksdb://", _store_url,
                "Faust table store: rocksdb:// (persistent, production) or memory:// (tests)."),
        Setting("WORKER_DATA_DIR", "data/{conf.web_port}", _text,
                "Worker state directory; {conf.web_port} keeps workers on one host apart."),
        Setting("PROCESSING_GUARANTEE", "at_least_once", _one_of("at_least_once", "exactly_once"),
                "Faust processing guarantee; PostgreSQL writes are idempotent either way."),
        Setting("PUBLISH_TIMEOUT_SECONDS", "10", _positive_float,
                "How long a POST waits for the broker's acknowledgement before answering 503."),
        Setting("MAX_IN_FLIGHT_PUBLISHES", "100", _positive_int,
                "Most POSTs awaiting the broker at once per worker; beyond it a POST is shed: 503 + Retry-After at once."),
        Setting("MAX_REQUEST_WAIT_SECONDS", "0.25", _positive_float,
                "Longest an API request may wait in a busy worker before it is handled; one that waited longer is shed: 503 + Retry-After."),
        Setting("MAX_MESSAGE_BYTES", "1048576", _positive_int,
                "Largest command message value decoded; a larger one is invalid (dead-lettered)."),
        Setting("MAX_JSON_DEPTH", "32", _positive_int,
                "Deepest JSON nesting decoded in a command message; a deeper one is invalid."),
        Setting("SHUTDOWN_TIMEOUT_SECONDS", "30", _positive_float,
                "Longest a worker takes to stop after SIGTERM, whatever it is doing; nothing unprocessed is committed."),
        Setting("AUDIT_INTERVAL_SECONDS", "60", _positive_float,
                "How often a worker audits its partitions' committed offsets against processed_events."),
        Setting("AUDIT_WINDOW_MESSAGES", "100000", _positive_int,
                "Offsets below the committed offset that the worker's audit checks per partition (python -m app audit checks all)."),
        Setting("DATABASE_POOL_SIZE", "10", _positive_int,
                "Maximum PostgreSQL connections per worker."),
        Setting("DATABASE_TIMEOUT_SECONDS", "10", _positive_float,
                "Timeout of one PostgreSQL operation (connect or statement)."),
        Setting("DATABASE_RETRY_MAX_SECONDS", "30", _non_negative_float,
                "Longest back-off between retries of a failed batch write."),
        Setting("CIRCUIT_BREAKER_FAILURES", "5", _positive_int,
                "Consecutive failed batch writes that open the PostgreSQL circuit breaker."),
        Setting("CIRCUIT_BREAKER_RESET_SECONDS", "60", _positive_float,
                "How long the breaker stays open before a half-open trial write."),
        Setting("CIRCUIT_BREAKER_SUCCESSES", "2", _positive_int,
                "Successful trials that close the breaker again: writes, or a ping a second when nothing is written."),
        Setting("API_KEYS", "", str,
                "Comma-separated API keys; setting keys (here or in API_KEYS_FILE) turns authentication on."),
        Setting("API_KEYS_FILE", "", str,
                "File with one API key per line (e.g. a mounted secret)."),
        Setting("AUTH_PROTECT", "writes", _one_of("writes", "all"),
                "What needs a key once keys are set: writes (POSTs) or all API endpoints."),
        Setting("SERVICE_NAME", "timestamp-pipeline", _text,
                "Service name in logs and traces (OTEL_SERVICE_NAME, when set, wins for traces)."),
        Setting("LOG_FORMAT", "auto", _one_of("auto", "text", "json"),
                "text: [LEVEL] [corr_id=...] Service - Message; json: ECS JSON lines; auto: text on a terminal."),
        Setting("LOG_LEVEL", "INFO", _one_of("DEBUG", "INFO", "WARNING", "ERROR"),
                "Lowest level logged."),
    )
}


@dataclass(frozen=True)
class Settings:
    app_id: str
    kafka_bootstrap_servers: str
    database_url: str
    command_topic: str
    command_topic_partitions: int
    kafka_replication_factor: int
    kafka_session_timeout_seconds: float
    command_topic_retention_ms: int
    dead_letter_topic: str
    batch_size: int
    batch_max_wait_seconds: float
    table_store: str
    worker_data_dir: str
    processing_guarantee: str
    publish_timeout_seconds: float
    max_in_flight_publishes: int
    max_request_wait_seconds: float
    max_message_bytes: int
    max_json_depth: int
    shutdown_timeout_seconds: float
    audit_interval_seconds: float
    audit_window_messages: int
    database_pool_size: int
    database_timeout_seconds: float
    database_retry_max_seconds: float
    circuit_breaker_failures: int
    circuit_breaker_reset_seconds: float
    circuit_breaker_successes: int
    api_keys: str
    api_keys_file: str
    auth_protect: str
    service_name: str
    log_format: str
    log_level: str

    @property
    def decode_limits(self):
        """MAX_MESSAGE_BYTES and MAX_JSON_DEPTH, as the command decoder takes them."""
        from app.domain.commands import DecodeLimits  # settings import nothing else of the app at load

        return DecodeLimits(self.max_message_bytes, self.max_json_depth)

    @property
    def kafka_broker_url(self) -> str:
        return ";".join(f"kafka://{host}" for host in self.kafka_bootstrap_servers.split(","))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read every setting, raising SettingsError naming the first bad variable."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            setting = SETTINGS[field.name.upper()]
            raw = environ.get(setting.env, setting.default)
            try:
                values[field.name] = setting.parse(raw)
            except ValueError as exc:
                reason = str(exc)
                if "literal" in reason or "convert" in reason:
                    reason = "is not a number"
                raise SettingsError(f"{setting.env}={raw!r}: {reason}") from None
        values["dead_letter_topic"] = values["dead_letter_topic"].replace("{command_topic}", values["command_topic"])
        return cls(**values)


settings = Settings.from_env()
