"""bench.machine: the speed figures each result records, so runs on a slower machine are told apart."""

from __future__ import annotations

import datetime as dt
import json

from app.domain.commands import decode_command, encode_command
from bench import machine


def test_the_sample_is_a_command_as_published():
    command = decode_command(machine.SAMPLE_COMMAND.encode())
    published = encode_command(command.command_id, "2026-12-06T16:00:00.123456Z", command.received_at)
    assert published.decode() == machine.SAMPLE_COMMAND
    assert command.received_at == dt.datetime(2026, 12, 6, 16, 0, 0, 124000, tzinfo=dt.timezone.utc)


def test_speed_reports_each_workload_in_its_unit():
    speed = machine.speed()
    assert set(speed) == {"python_loop_ns_per_iteration", "json_decode_us", "thread_round_trip_cpu_us"}
    # Wide physical bounds: a figure in the wrong unit (seconds, or per run rather than per item) is far outside.
    assert 1 < speed["python_loop_ns_per_iteration"] < 10_000
    assert 0.05 < speed["json_decode_us"] < 1_000
    assert 1 < speed["thread_round_trip_cpu_us"] < 100_000


def test_a_slower_decode_shows_as_a_larger_figure(monkeypatch):
    loads = json.loads

    def four_times(text):
        for _ in range(3):
            loads(text)
        return loads(text)

    plain, slowed = [], []
    for _ in range(5):  # alternated, so that a host slowing down or speeding up touches both alike
        plain.append(machine._json_decode())
        with monkeypatch.context() as patched:
            patched.setattr(machine.json, "loads", four_times)
            slowed.append(machine._json_decode())
    # Four times the work, with a margin for a noisy host (a CI run once measured 1.06x of 2x work).
    assert min(slowed) > 2 * min(plain)


def test_the_thread_round_trip_crosses_to_another_thread_and_back(monkeypatch):
    served = []
    get = machine.queue.SimpleQueue.get

    class Recording(machine.queue.SimpleQueue):
        def get(self, *args, **kwargs):
            served.append(machine.threading.current_thread().name)
            return get(self, *args, **kwargs)

    monkeypatch.setattr(machine.queue, "SimpleQueue", Recording)
    monkeypatch.setattr(machine, "THREAD_ROUND_TRIPS", 10)
    assert machine._thread_round_trip() > 0
    main = machine.threading.main_thread().name
    assert served.count(main) == 10 and len(served) == 20  # each trip: one get on the echo thread, one here


def test_the_best_of_several_runs_is_the_least_disturbed():
    runs = iter([5.0, 3.0, 4.0])
    assert machine._best_of(3, lambda: next(runs)) == 3.0


def test_the_report_line_names_the_figures_and_is_empty_for_older_results():
    host = {"speed": {"python_loop_ns_per_iteration": 38.5, "json_decode_us": 2.1, "thread_round_trip_cpu_us": 34.0}}
    line = machine.speed_line(host)
    assert "38.5 ns" in line and "2.1 µs" in line and "34 µs" in line
    assert machine.speed_line({"cpus": 2}) == ""
