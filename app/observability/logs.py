"""Logging: every line carries the correlation id of the request or event at hand.

LOG_FORMAT=text gives the seed's pattern `[LEVEL] [corr_id=ING:uuid] ServiceName - Message`;
LOG_FORMAT=json gives one ECS JSON object per line (via ecs-logging).
"""

from __future__ import annotations

import logging
import sys

import ecs_logging
from opentelemetry import trace

from app.domain.correlation import correlation_id, event_id

TEXT_FORMAT = "[%(levelname)s] [corr_id=%(corr_id)s] %(service_name)s - %(message)s"


class ContextFilter(logging.Filter):
    """Adds service name, correlation id, event id and trace ids to each record."""

    def __init__(self, service: str = "timestamp-pipeline") -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        corr = correlation_id.get()
        record.service_name = self.service
        record.corr_id = corr or "-"
        fields = {"service.name": self.service}
        if corr:
            fields["correlation_id"] = corr
        if (event := event_id.get()) is not None:
            fields["event.id"] = event
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace.id"] = format(span.trace_id, "032x")
            fields["span.id"] = format(span.span_id, "016x")
        record.__dict__.update(fields)
        return True


MASK = "***"


def configured_secrets() -> list[str]:
    """The secret values this process was configured with: passwords, also from their files."""
    from urllib.parse import unquote, urlsplit

    from app.settings import settings

    found = [settings.kafka_sasl_password, unquote(urlsplit(settings.database_url).password or "")]
    for path in (settings.kafka_sasl_password_file, settings.database_password_file, settings.api_keys_file):
        try:
            found += open(path).read().split() if path else []
        except OSError:
            pass
    found += [key for key in settings.api_keys.split(",") if key.strip()]
    return sorted({secret.strip() for secret in found if len(secret.strip()) >= 4}, key=len, reverse=True)


def mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class SecretFilter(logging.Filter):
    """Replaces every configured secret in a log line, and in its traceback, with ***.

    Nothing logs a secret on purpose; this is the net under what a library or an
    exception message might carry (a DSN, an authentication error).
    """

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self._secrets = secrets

    def secrets(self) -> list[str]:
        if self._secrets is None:
            try:
                self._secrets = configured_secrets()
            except Exception:  # noqa: BLE001  bad settings are reported elsewhere; log on
                self._secrets = []
        return self._secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets()
        if not secrets:
            return True
        message = record.getMessage()
        masked = mask(message, secrets)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            trace_text = logging.Formatter().formatException(record.exc_info)
            if mask(trace_text, secrets) != trace_text:
                record.msg, record.args = f"{record.msg}\n{mask(trace_text, secrets)}", None
                record.exc_info, record.exc_text = None, None
        return True


class JsonFormatter(ecs_logging.StdlibFormatter):
    """ECS JSON without the bulky process/origin fields, and without the text-only extras."""

    def __init__(self) -> None:
        super().__init__(exclude_fields=["log.original", "process", "log.origin", "service_name", "corr_id"])


def resolve_format(log_format: str, stream=sys.stderr) -> str:
    """auto: text on a terminal, json otherwise."""
    if log_format == "auto":
        return "text" if stream.isatty() else "json"
    return log_format


def logging_config(log_format: str, level: str, service: str) -> dict:
    """A dictConfig for the worker (Faust applies it at start-up) and the CLI."""
    formatter = (
        {"()": "app.observability.logs.JsonFormatter"} if resolve_format(log_format) == "json"
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "app.observability.logs.ContextFilter", "service": service},
                    "secrets": {"()": "app.observability.logs.SecretFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["context", "secrets"],
                "formatter": "default",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }
