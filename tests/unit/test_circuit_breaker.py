import psycopg2

from app.adapters.database import Database
from app.sink.circuit_breaker import CircuitBreaker, State
from app.sink.batch_writer import BatchWriter, no_dead_letters, no_table


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def breaker(clock, transitions=None):
    return CircuitBreaker(5, 60, 2, clock=clock,
                          on_transition=(lambda a, b: transitions.append((a, b))) if transitions is not None else None)


def test_opens_after_consecutive_failures_only():
    clock = Clock()
    cb = breaker(clock)
    for _ in range(4):
        cb.record_failure()
    cb.record_success()  # resets the count
    for _ in range(4):
        cb.record_failure()
    assert cb.state is State.CLOSED
    cb.record_failure()
    assert cb.state is State.OPEN
    assert cb.seconds_until_trial() == 60


def test_half_open_after_timeout_then_closed_after_successes():
    clock, transitions = Clock(), []
    cb = breaker(clock, transitions)
    for _ in range(5):
        cb.record_failure()
    clock.now = 59.9
    assert cb.state is State.OPEN
    clock.now = 60
    assert cb.state is State.HALF_OPEN and cb.seconds_until_trial() == 0
    cb.record_success()
    assert cb.state is State.HALF_OPEN
    cb.record_success()
    assert cb.state is State.CLOSED
    assert transitions == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]


def test_failure_while_half_open_reopens_for_a_full_timeout():
    clock = Clock()
    cb = breaker(clock)
    for _ in range(5):
        cb.record_failure()
    clock.now = 61
    assert cb.state is State.HALF_OPEN
    cb.record_failure()
    assert cb.state is State.OPEN
    clock.now = 120
    assert cb.state is State.OPEN
    clock.now = 121
    assert cb.state is State.HALF_OPEN


class PingedDatabase(Database):
    def __init__(self, ping_error: Exception | None = None) -> None:
        super().__init__("postgresql://unused")
        self.ping_error = ping_error
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1
        if self.ping_error:
            raise self.ping_error


def half_open_breaker() -> CircuitBreaker:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5, success_threshold=2, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 10.0
    assert breaker.state is State.HALF_OPEN
    return breaker


def sink_pinging(breaker: CircuitBreaker, database: PingedDatabase) -> BatchWriter:
    return BatchWriter(database=database, send_dead_letters=no_dead_letters, update_table=no_table, topic="t",
                       breaker=breaker)


async def test_pings_close_a_half_open_breaker_without_traffic():
    database = PingedDatabase()
    sink = sink_pinging(half_open_breaker(), database)
    await sink.try_half_open_breaker()
    await sink.try_half_open_breaker()
    assert sink.breaker.state is State.CLOSED
    await sink.try_half_open_breaker()  # closed: no more pings
    assert database.pings == 2


async def test_a_failed_ping_opens_a_half_open_breaker_again():
    sink = sink_pinging(half_open_breaker(), PingedDatabase(psycopg2.OperationalError("connection refused")))
    await sink.try_half_open_breaker()
    assert sink.breaker.state is State.OPEN
