"""Logging: every line carries the correlation id of the request or event at hand.

LOG_FORMAT=text gives the seed's pattern `[LEVEL] [corr_id=ING:uuid] ServiceName - Message`;
LOG_FORMAT=json gives one ECS JSON object per line (python-json-logger, serialised by msgspec).
"""

from __future__ import annotations

import logging
import sys
import time
import traceback

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.msgspec import MsgspecFormatter

from app.domain.correlation import correlation_id, event_id

TEXT_FORMAT = "[%(levelname)s] [corr_id=%(corr_id)s] %(service_name)s - %(message)s"


class ContextFilter(logging.Filter):
    """Adds service name, correlation id, event id and trace ids to each record.

    `service_name` and `corr_id` for the text pattern; the same facts as ECS
    objects (`service`, `correlation_id`, `event`, `trace`, `span`) for JSON.
    """

    def __init__(self, service: str = "timestamp-pipeline") -> None:
        super().__init__()
        self.service = service
        self.service_object = {"name": service}

    def filter(self, record: logging.LogRecord) -> bool:
        corr = correlation_id.get()
        record.service_name = self.service
        record.corr_id = corr or "-"
        record.service = self.service_object
        if corr:
            record.correlation_id = corr
        if (event := event_id.get()) is not None:
            record.event = {"id": event}
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace = {"id": format(span.trace_id, "032x")}
            record.span = {"id": format(span.span_id, "016x")}
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


ECS_VERSION = "1.6.0"


class JsonFormatter(MsgspecFormatter):
    """One ECS JSON object per line: `@timestamp` (UTC, ms), `log.level`, `message`, `ecs.version`,
    `log.logger`, the ContextFilter's objects, `error` for an exception, and any `extra=` field.

    These are the fields ecs-logging wrote for this service, in a quarter of its CPU time
    (docs/performance.md, "POST against Faust's floor"): one accepted POST logs one line.
    """

    def __init__(self) -> None:
        super().__init__("{message}", style="{", static_fields={"ecs.version": ECS_VERSION},
                         reserved_attrs=[*RESERVED_ATTRS, "service_name", "corr_id"])
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC to the millisecond; the text of a second is made once a second."""
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        log_data["@timestamp"] = self.formatTime(record)
        log_data["log.level"] = record.levelname.lower()
        super().add_fields(log_data, record, message_dict)
        log_data["log"] = {"logger": record.name}
        if log_data.pop("exc_info", None) and record.exc_info:
            # As ecs-logging wrote it: the frames only; the type and message have fields of their own.
            kind, error, frames = record.exc_info
            log_data["error"] = {"type": kind.__name__ if kind else None, "message": str(error) if error else None,
                                 "stack_trace": "".join(traceback.format_tb(frames)) if frames else None}


def skip_unused_record_fields() -> None:
    """Neither format prints a record's thread, process or multiprocessing name, nor the file, line and
    function that logged it: do not look them up for each record (the logging HOWTO's "Optimization").

    Finding the caller walks the stack: about a fifth of an `Accepted command` line's cost, paid on
    the event loop for every accepted POST (docs/performance.md, issue 21 part 7).
    """
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the HOWTO's documented switch; there is no public one


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
