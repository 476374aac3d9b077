"""The long-lived objects the agents and views share, built from the settings (no Faust here)."""

from __future__ import annotations

from app.adapters.database import Database
from app.adapters.publisher import CommandPublisher
from app.faust_compat.options import kafka_request_timeout_seconds
from app.observability import metrics
from app.settings import settings
from app.sink.circuit_breaker import CircuitBreaker

# POST /v1/timestamps publishes through its own producer (app/adapters/publisher.py).
command_publisher = CommandPublisher(
    settings.kafka, kafka_request_timeout_seconds(settings), settings.max_in_flight_publishes)
metrics.command_publishes_in_flight.set_function(lambda: command_publisher.in_flight)

database = Database(settings.database_dsn, pool_size=settings.database_pool_size,
                    timeout=settings.database_timeout_seconds)

# Guards the agent's PostgreSQL writes (app/sink/timestamp_sink.py); readiness reports it.
database_breaker = CircuitBreaker(
    settings.circuit_breaker_failures,
    settings.circuit_breaker_reset_seconds,
    settings.circuit_breaker_successes,
    on_transition=metrics.record_breaker_transition,
)
