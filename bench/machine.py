"""The machine a result was measured on: what it is, and how fast it runs Python today.

A virtual machine can be moved to a slower host between two runs of the same
code (here on 2026-12-06 the kernel changed, and Faust's own per-event cost
went from about 74 to about 185 CPU µs). Absolute figures (latency at a fixed
rate, RSS per minute of a fixed load) are only comparable between runs whose
machine ran these same small workloads at about the same speed; ratios to a
floor measured in the same run are comparable across machines.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import threading
import time

LOOP_ITERATIONS = 1_000_000
JSON_DECODES = 20_000
THREAD_ROUND_TRIPS = 2_000
REPEATS = 5
# A command as the HTTP front publishes it (app.domain.commands.encode_command).
SAMPLE_COMMAND = ('{"command_id":"3fa85f64-5717-4562-b3fc-2c963f66afa6","event_timestamp":"2026-12-06T16:00:00.123456Z",'
                  '"received_at":"2026-12-06T16:00:00.124000Z"}')


def _best_of(repeats: int, run) -> float:
    """The fastest of `repeats` runs: the least disturbed by whatever else the machine does."""
    return min(run() for _ in range(repeats))


def _python_loop() -> float:
    started = time.process_time()
    total = 0
    for i in range(LOOP_ITERATIONS):
        total += i
    return (time.process_time() - started) / LOOP_ITERATIONS * 1e9


def _json_decode() -> float:
    decode, text = json.loads, SAMPLE_COMMAND
    started = time.process_time()
    for _ in range(JSON_DECODES):
        decode(text)
    return (time.process_time() - started) / JSON_DECODES * 1e6


def _thread_round_trip() -> float:
    """CPU µs for one hand-over to another thread and back, as Faust's consumer thread does per fetch."""
    there, back = queue.SimpleQueue(), queue.SimpleQueue()

    def echo() -> None:
        for _ in range(THREAD_ROUND_TRIPS):
            back.put(there.get())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    started = time.process_time()  # the whole process: both threads' CPU
    for i in range(THREAD_ROUND_TRIPS):
        there.put(i)
        back.get()
    spent = time.process_time() - started
    thread.join()
    return spent / THREAD_ROUND_TRIPS * 1e6


def speed() -> dict:
    """CPU time of three fixed workloads (lower is faster), best of REPEATS; about a second in all."""
    return {
        "python_loop_ns_per_iteration": round(_best_of(REPEATS, _python_loop), 1),
        "json_decode_us": round(_best_of(REPEATS, _json_decode), 2),
        "thread_round_trip_cpu_us": round(_best_of(REPEATS, _thread_round_trip), 1),
    }


def host() -> dict:
    """The machine, for a result's `host`: cores, kernel and Python, load, and speed()."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "speed": speed()}


def speed_line(host_: dict) -> str:
    """One line for a report; empty for a result recorded before speed() existed."""
    measured = host_.get("speed")
    if not measured:
        return ""
    return (f"machine speed (CPU time, lower is faster): a Python loop iteration "
            f"{measured['python_loop_ns_per_iteration']:g} ns, json.loads of a command "
            f"{measured['json_decode_us']:g} µs, a round trip to another thread "
            f"{measured['thread_round_trip_cpu_us']:g} µs")
