"""Settings, read once from environment variables and validated at start-up.

Every setting is an environment variable; a bad value stops the process with
an error that names the variable. Each is declared once, as a field of `Settings`
(its variable is the field's name in capitals); `docs/configuration.md` is
generated from these declarations by `make docs` (`app.settings_docs`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # LOG_LEVEL's values, and `python -m app workers --log-level`'s


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _retention(text: str) -> float | None:
    """`forever` or 0 (None: keep everything), else seconds, or a number with s, m, h or d."""
    text = text.strip().lower()
    if text in ("0", "forever"):
        return None
    unit = _DURATION_UNITS.get(text[-1:])
    try:
        value = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise ValueError("must be 0, forever, or a duration such as 7d, 12h, 30m, 45s") from None
    if value <= 0:
        raise ValueError("must be 0, forever, or a positive duration")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _optional_text(text: str) -> str:
    return text.strip()


def _optional_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        text = text.strip()
        if text and text not in choices:
            raise ValueError(f"must be empty or one of {', '.join(choices)}")
        return text

    return parse


def _optional_file(text: str) -> str:
    """A path that must name a readable file when set (read at use, so a rotated file is picked up)."""
    text = text.strip()
    if text and not os.path.isfile(text):
        raise ValueError("no such file")
    if text and not os.access(text, os.R_OK):
        raise ValueError("file is not readable")
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
    """One environment variable: its default as written in the environment, its parser, its meaning."""

    env: str
    default: str
    parse: Callable[[str], object]
    help: str


def _setting(default: str, parse: Callable[[str], object], help: str, secret: bool = False) -> Any:
    """A field of Settings, read from the variable named like the field in capitals (a secret is kept
    out of the settings' repr)."""
    return field(repr=not secret, metadata={"default": default, "parse": parse, "help": help})


@dataclass(frozen=True)
class Settings:
    """Every setting, declared once: name (the variable's, in lower case), type, default, parser, meaning."""

    app_id: str = _setting(
        "timestamp-pipeline", _text,
        "Faust application id: the consumer group and the prefix of internal topics.")
    kafka_bootstrap_servers: str = _setting(
        "127.0.0.1:9092", _bootstrap_servers,
        "Kafka brokers, host:port[,host:port...].")
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", _one_of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "How every Kafka client connects: PLAINTEXT, SSL (TLS, with a client certificate for mTLS), "
        "SASL_PLAINTEXT or SASL_SSL. See docs/security.md.")
    kafka_sasl_mechanism: str = _setting(
        "", _optional_choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        "SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str = _setting(
        "", _optional_text, "SASL user name with SASL_*.")
    kafka_sasl_password: str = _setting(
        "", _optional_text, "SASL password with SASL_* (or KAFKA_SASL_PASSWORD_FILE, not both).", secret=True)
    kafka_sasl_password_file: str = _setting(
        "", _optional_file, "A file holding the SASL password (a mounted Secret); read when a client is built.")
    kafka_ssl_cafile: str = _setting(
        "", _optional_file, "PEM file of the CA(s) that signed the brokers' certificates (default: the system's).")
    kafka_ssl_certfile: str = _setting(
        "", _optional_file, "PEM client certificate for mutual TLS (with KAFKA_SSL_KEYFILE).")
    kafka_ssl_keyfile: str = _setting(
        "", _optional_file, "PEM private key of KAFKA_SSL_CERTFILE.")
    kafka_ssl_check_hostname: bool = _setting(
        "true", _bool, "Whether a broker's certificate must name the host connected to (keep true).")
    kafka_create_topics: bool = _setting(
        "true", _bool,
        "Whether workers create missing topics (theirs and Faust's internal ones); false when an admin "
        "pre-creates them, and the worker needs no Create ACL.")
    database_url: str = _setting(
        "postgresql://postgres@127.0.0.1:5432/timestamps", _database_url,
        "PostgreSQL connection URL (libpq form); TLS with ?sslmode=verify-full&sslrootcert=/path/ca.pem.",
        secret=True)
    database_password_file: str = _setting(
        "", _optional_file,
        "A file holding the PostgreSQL password, read at each new connection (DATABASE_URL without one).")
    command_topic: str = _setting(
        "timestamp.command.v1", _text,
        "Topic of timestamp commands: the golden record.")
    command_topic_partitions: int = _setting(
        "8", _positive_int,
        "Partitions of the command topic and of the table changelog (upper bound on workers).")
    dead_letter_topic: str = _setting(
        "{command_topic}.dlq", _text,
        "Topic of messages that can never be processed; {command_topic} is replaced.")
    kafka_replication_factor: int = _setting(
        "1", _positive_int,
        "Replication factor of the topics this service creates (3 on a production cluster).")
    kafka_group_instance_id: str = _setting(
        "", _optional_text,
        "Static group membership: a name stable across restarts of this worker (the pod name). A worker back "
        "within KAFKA_SESSION_TIMEOUT_SECONDS gets its partitions back without a rebalance; empty: dynamic.")
    kafka_fetch_min_bytes: int = _setting(
        "65536", _positive_int,
        "Bytes the broker gathers for the worker's consumer before it answers a fetch, unless "
        "KAFKA_FETCH_MAX_WAIT_SECONDS passes first: fewer, fuller fetches under a trickle of commands.")
    kafka_fetch_max_wait_seconds: float = _setting(
        "0.05", _positive_float,
        "Longest the broker holds a fetch of the worker's consumer for KAFKA_FETCH_MIN_BYTES: the most it "
        "adds to the time from a command's publish to its processing.")
    kafka_session_timeout_seconds: float = _setting(
        "10", _positive_float,
        "How soon the group notices a dead worker and hands its partitions to others.")
    command_topic_retention_ms: int = _setting(
        "-1", _retention_ms,
        "retention.ms of the command topic when this service creates it; -1 keeps it forever.")
    batch_size: int = _setting(
        "500", _positive_int,
        "Most events written to PostgreSQL in one transaction.")
    batch_max_wait_seconds: float = _setting(
        "0.2", _positive_float,
        "Longest a partial batch waits for more events before it is written.")
    table_store: str = _setting(
        "rocksdb://", _store_url,
        "Faust table store: rocksdb:// (persistent, production) or memory:// (tests).")
    table_rocksdb_memory_mib: int = _setting(
        "64", _positive_int,
        "What the query table's RocksDB stores may hold in memory in this worker, every partition it holds "
        "together (MiB): one block cache for the blocks GETs read and the files' index and filter blocks, "
        "to which the memtables are charged (at most half of it). See the memory budget in docs/deployment.md.")
    table_rocksdb_write_buffer_mib: int = _setting(
        "4", _positive_int,
        "RocksDB memtable size per table partition (MiB), at most 2 per partition; once all partitions' "
        "memtables together reach half of TABLE_ROCKSDB_MEMORY_MIB, the one being written is flushed.")
    table_retention: float | None = _setting(
        "forever", _retention,
        "How long an id stays in the query table, from its record's created_at (e.g. 7d, 12h); "
        "0 or forever keeps every id. Older ids are tombstoned and answered from PostgreSQL.")
    table_expiry_interval_seconds: float = _setting(
        "60", _positive_float,
        "How often each worker tombstones the expired ids of its table partitions (with TABLE_RETENTION).")
    table_changelog_segment_ms: int = _setting(
        "3600000", _positive_int,
        "segment.ms of a changelog the worker creates with TABLE_RETENTION: Kafka compacts only closed segments.")
    table_changelog_delete_retention_ms: int = _setting(
        "3600000", _positive_int,
        "delete.retention.ms of that changelog: how long a tombstone outlives compaction (and recovery reads it).")
    worker_data_dir: str = _setting(
        "data/{conf.web_port}", _text,
        "Worker state directory; {conf.web_port} keeps workers on one host apart.")
    processing_guarantee: str = _setting(
        "at_least_once", _one_of("at_least_once", "exactly_once"),
        "Faust processing guarantee; PostgreSQL writes are idempotent either way.")
    publish_timeout_seconds: float = _setting(
        "10", _positive_float,
        "How long a POST waits for the broker's acknowledgement before answering 503.")
    max_in_flight_publishes: int = _setting(
        "100", _positive_int,
        "Most POSTs awaiting the broker at once per worker; beyond it a POST is shed: 503 + Retry-After at once.")
    max_request_wait_seconds: float = _setting(
        "0.25", _positive_float,
        "Longest an API request may wait in a busy worker before it is handled; one that waited longer is shed: 503 + Retry-After.")
    max_message_bytes: int = _setting(
        "1048576", _positive_int,
        "Largest command message value decoded; a larger one is invalid (dead-lettered).")
    max_json_depth: int = _setting(
        "32", _positive_int,
        "Deepest JSON nesting decoded in a command message; a deeper one is invalid.")
    shutdown_timeout_seconds: float = _setting(
        "30", _positive_float,
        "Longest a worker takes to stop after SIGTERM, whatever it is doing; nothing unprocessed is committed.")
    partition_stall_seconds: float = _setting(
        "120", _positive_float,
        "A partition whose committed offset stays behind its end without moving this long is stalled: "
        "timestamp_partition_stalled, the PartitionStalled alert, and `python -m app audit` report it.")
    audit_interval_seconds: float = _setting(
        "60", _positive_float,
        "How often a worker audits its partitions' committed offsets against processed_events.")
    audit_window_messages: int = _setting(
        "100000", _positive_int,
        "Offsets below the committed offset that the worker's audit checks per partition (python -m app audit checks all).")
    database_pool_size: int = _setting(
        "10", _positive_int,
        "Maximum PostgreSQL connections per worker.")
    database_timeout_seconds: float = _setting(
        "10", _positive_float,
        "Timeout of one PostgreSQL operation (connect or statement).")
    database_retry_max_seconds: float = _setting(
        "30", _positive_float,
        "Longest back-off between retries of a failed write (PostgreSQL, Kafka) or of the start-up migrations.")
    circuit_breaker_failures: int = _setting(
        "5", _positive_int,
        "Consecutive failed batch writes that open the PostgreSQL circuit breaker.")
    circuit_breaker_reset_seconds: float = _setting(
        "60", _positive_float,
        "How long the breaker stays open before a half-open trial write.")
    circuit_breaker_successes: int = _setting(
        "2", _positive_int,
        "Successful trials that close the breaker again: writes, or a ping a second when nothing is written.")
    api_keys: str = _setting(
        "", str,
        "Comma-separated API keys; setting keys (here or in API_KEYS_FILE) turns authentication on.")
    api_keys_file: str = _setting(
        "", str,
        "File with one API key per line (e.g. a mounted secret).")
    auth_protect: str = _setting(
        "writes", _one_of("writes", "all"),
        "What needs a key once keys are set: writes (POSTs) or all API endpoints.")
    service_name: str = _setting(
        "timestamp-pipeline", _text,
        "Service name in logs and traces (OTEL_SERVICE_NAME, when set, wins for traces).")
    log_format: str = _setting(
        "auto", _one_of("auto", "text", "json"),
        "text: [LEVEL] [corr_id=...] Service - Message; json: ECS JSON lines; auto: text on a terminal.")
    log_level: str = _setting(
        "INFO", _one_of(*LOG_LEVELS),
        "Lowest level logged.")

    @property
    def decode_limits(self):
        """MAX_MESSAGE_BYTES and MAX_JSON_DEPTH, as the command decoder takes them."""
        from app.domain.commands import DecodeLimits  # settings import nothing else of the app at load

        return DecodeLimits(self.max_message_bytes, self.max_json_depth)

    @property
    def kafka(self):
        """How every Kafka client connects (`app.adapters.kafka_client`): brokers and KAFKA_* security."""
        from app.adapters.kafka_client import KafkaConnection  # settings import nothing else of the app at load

        return KafkaConnection.from_settings(self)

    def database_dsn(self) -> str:
        """DATABASE_URL with the password of DATABASE_PASSWORD_FILE (read now, so a rotated file counts
        at the next connection pool or command). Never log it."""
        if not self.database_password_file:
            return self.database_url
        from urllib.parse import quote, urlsplit, urlunsplit

        with open(self.database_password_file) as file:
            password = file.read().strip()
        parts = urlsplit(self.database_url)
        user, _, host = parts.netloc.rpartition("@")
        netloc = f"{user}:{quote(password, safe='')}@{host}" if user else f":{quote(password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def kafka_broker_url(self) -> str:
        return ";".join(f"kafka://{host}" for host in self.kafka_bootstrap_servers.split(","))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read every setting, raising SettingsError naming the first bad variable."""
        environ = os.environ if environ is None else environ
        for name, instead in REPLACED_SETTINGS.items():
            if name in environ:
                raise SettingsError(f"{name}: no longer read; {instead}")
        values = {}
        for setting in SETTINGS.values():
            raw = environ.get(setting.env, setting.default)
            try:
                values[setting.env.lower()] = setting.parse(raw)
            except ValueError as exc:
                reason = str(exc)
                if "literal" in reason or "convert" in reason:
                    reason = "is not a number"
                raise SettingsError(f"{setting.env}={raw!r}: {reason}") from None
        values["dead_letter_topic"] = values["dead_letter_topic"].replace("{command_topic}", values["command_topic"])
        _check_kafka_security(values)
        _check_database_password(values)
        return cls(**values)


def _check_kafka_security(values: dict) -> None:
    """Combinations of the KAFKA_* security settings that cannot work, named at start-up."""
    protocol = values["kafka_security_protocol"]
    sasl = protocol.startswith("SASL_")
    if sasl:
        if not values["kafka_sasl_mechanism"]:
            raise SettingsError(f"KAFKA_SASL_MECHANISM: required with KAFKA_SECURITY_PROTOCOL={protocol}")
        if not values["kafka_sasl_username"]:
            raise SettingsError(f"KAFKA_SASL_USERNAME: required with KAFKA_SECURITY_PROTOCOL={protocol}")
        if values["kafka_sasl_password"] and values["kafka_sasl_password_file"]:
            raise SettingsError("KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set: set one")
        if not values["kafka_sasl_password"] and not values["kafka_sasl_password_file"]:
            raise SettingsError(f"KAFKA_SASL_PASSWORD_FILE (or KAFKA_SASL_PASSWORD): required with {protocol}")
    else:
        for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password", "kafka_sasl_password_file"):
            if values[name]:
                raise SettingsError(f"{name.upper()}: set, but KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL")
    tls = protocol in ("SSL", "SASL_SSL")
    for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        if values[name] and not tls:
            raise SettingsError(f"{name.upper()}: set, but KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS")
    if bool(values["kafka_ssl_certfile"]) != bool(values["kafka_ssl_keyfile"]):
        missing = "KAFKA_SSL_KEYFILE" if values["kafka_ssl_certfile"] else "KAFKA_SSL_CERTFILE"
        raise SettingsError(f"{missing}: required with the other (a client certificate and its key go together)")


def _check_database_password(values: dict) -> None:
    if values["database_password_file"]:
        from urllib.parse import urlsplit

        if urlsplit(values["database_url"]).password:
            raise SettingsError("DATABASE_PASSWORD_FILE is set, but DATABASE_URL has a password too: set one")


# Variables an earlier release read, and what replaced them: set, they stop the worker rather than
# be ignored, since the setting they meant would silently fall back to its default.
REPLACED_SETTINGS = {
    "TABLE_ROCKSDB_BLOCK_CACHE_MIB": "set TABLE_ROCKSDB_MEMORY_MIB, the worker's total for every table partition "
                                     "(it was a block cache per partition)",
}

# One entry per environment variable, in the order of the fields (and of docs/configuration.md).
SETTINGS: dict[str, Setting] = {f.name.upper(): Setting(f.name.upper(), **f.metadata) for f in fields(Settings)}


def __getattr__(name: str) -> Settings:
    """`settings`, read from the environment on first use, so that importing SettingsError cannot raise it."""
    if name != "settings":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["settings"] = loaded = Settings.from_env()
    return loaded
