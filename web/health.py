"""Health views: liveness and readiness probes."""

from __future__ import annotations

import asyncio

from faust.web import Request, Response, View

from app.faust_compat import fixes as faust_fixes
from app.faust_compat.kafka_record_reader import blocked_partitions
from app.faust_app import app
from app.sink.circuit_breaker import State
from tables.changelog_batch_writer import table_store_health

CHECK_TIMEOUT_SECONDS = 2.0


@app.page("/health")
class Health(View):
    """Process is up and serving HTTP (kept for the seed's clients)."""

    async def get(self, request: Request) -> Response:
        return self.json({"status": "UP"})


@app.page("/health/live")
class Liveness(View):
    """The process answers: restart it only when this fails."""

    async def get(self, request: Request) -> Response:
        return self.json({"status": "UP"})


async def _check(probe) -> dict:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
        return {"status": "UP"}
    except Exception as exc:  # any failure makes the worker not ready
        return {"status": "DOWN", "error": f"{type(exc).__name__}: {exc}"[:500]}


async def _kafka() -> None:
    await faust_fixes.kafka_producer(app).client.fetch_all_metadata()


async def _postgres() -> None:
    if not app.schema_ready.is_set():
        raise RuntimeError("database migrations not applied yet")
    await app.services.database.ping()


async def _table_recovery() -> None:
    if app.in_recovery or not app.tables.recovery.completed.is_set():
        raise RuntimeError("table recovery in progress")


async def _circuit_breaker() -> None:
    breaker = app.services.database_breaker
    if breaker.state is State.OPEN:
        raise RuntimeError(f"PostgreSQL circuit breaker open; trial in {breaker.seconds_until_trial():.0f} s")


async def _table_store() -> None:
    error = table_store_health.error
    if error is not None:
        what = "disk full" if error.disk_full else "I/O error"
        raise RuntimeError(f"table store under {app.conf.datadir} refuses writes ({what}): {error.strerror}")


async def _consumer() -> None:
    assigned = [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
    blocked = blocked_partitions.current(assigned)
    if blocked:
        raise RuntimeError("; ".join(b.describe() for b in blocked))


@app.page("/health/ready")
class Readiness(View):
    """Kafka and PostgreSQL reachable, no partition the consumer cannot read, table recovered and its
    store writable (disk not full), breaker not open: send traffic here."""

    async def get(self, request: Request) -> Response:
        names = ("kafka", "consumer", "postgres", "table_recovery", "table_store", "circuit_breaker")
        results = await asyncio.gather(
            _check(_kafka), _check(_consumer), _check(_postgres), _check(_table_recovery), _check(_table_store),
            _check(_circuit_breaker))
        checks = dict(zip(names, results))
        ready = all(c["status"] == "UP" for c in checks.values())
        return self.json({"status": "UP" if ready else "DOWN", "checks": checks}, status=200 if ready else 503)
