"""Is a Kafka broker answering? The readiness probe of the local stack.

The only part of deploy.local that needs aiokafka; it imports it lazily, so
the rest of the stack (and ``python -m deploy.local down``) runs on the
standard library alone.
"""

import asyncio
import concurrent.futures
import contextvars
import logging
import time
from collections.abc import Callable

from .processes import StackError


def _run_coro(coro):
    """asyncio.run(), also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from async code (e.g. an async test): use a private loop in a thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# Set while a readiness probe runs; asyncio tasks inherit it, so the filter
# below mutes exactly the probe's own "Unable connect" errors while the broker
# boots, and nothing logged by other Kafka clients in the same process.
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("stack_probing", default=False)
_PROBE_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.admin.client")


def _mute_probe_logs() -> None:
    """Install (once) the filter that drops aiokafka records of our probes."""
    for name in _PROBE_LOGGERS:
        logger = logging.getLogger(name)
        if _probe_log_filter not in logger.filters:
            logger.addFilter(_probe_log_filter)


def _probe_log_filter(record: logging.LogRecord) -> bool:
    return not _PROBING.get()


async def _kafka_answers(bootstrap: str, attempt_timeout: float, cluster_id: str | None) -> None:
    """One metadata round trip with an admin client; raises if it fails.

    With cluster_id, also raises if a different cluster answers (another
    broker on the port would otherwise pass for ours).
    """
    from aiokafka.admin import AIOKafkaAdminClient  # lazy: only this needs aiokafka

    from app.adapters.kafka_client import client_options

    _mute_probe_logs()
    _PROBING.set(True)  # asyncio.run gives this coroutine its own context copy
    client = AIOKafkaAdminClient(
        **client_options(bootstrap), request_timeout_ms=int(attempt_timeout * 1000)
    )
    try:
        await asyncio.wait_for(client.start(), attempt_timeout)
        info = await asyncio.wait_for(client.describe_cluster(), attempt_timeout)
        if cluster_id is not None and info.get("cluster_id") != cluster_id:
            raise WrongCluster(
                f"{bootstrap} is cluster {info.get('cluster_id')}, not {cluster_id}"
            )
    finally:
        await client.close()


class WrongCluster(Exception):
    """A broker answered, but it belongs to another cluster."""


def kafka_answers(
    bootstrap: str, attempt_timeout: float = 5.0, cluster_id: str | None = None
) -> bool:
    """True if the broker at bootstrap (of cluster_id, if given) answers metadata now."""
    try:
        _run_coro(_kafka_answers(bootstrap, attempt_timeout, cluster_id))
    except (ImportError, WrongCluster):
        raise
    except Exception:  # any connection/protocol error means "not (yet) ready"
        return False
    return True


def wait_kafka_ready(
    bootstrap: str,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    cluster_id: str | None = None,
) -> None:
    """Block until the broker answers metadata requests.

    Raises TimeoutError after timeout seconds, or StackError as soon as
    ``alive()`` (if given) reports the broker process gone or a broker of a
    cluster other than cluster_id (if given) answers.
    """
    try:
        import aiokafka  # noqa: F401
    except ImportError as exc:
        raise StackError(
            "aiokafka is needed for the Kafka readiness check; run this script "
            "with the project's virtualenv python"
        ) from exc
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise StackError(f"Kafka process exited before answering at {bootstrap}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s")
        try:
            if kafka_answers(bootstrap, max(1.0, min(5.0, remaining)), cluster_id):
                return
        except WrongCluster as exc:
            raise StackError(f"another Kafka answers at {bootstrap}: {exc}") from exc
        time.sleep(0.5)
