"""Open-loop HTTP load from Vegeta (a Go load generator), with the same statistics as `bench.http_load`.

The Python client of `bench.http_load` costs about as much CPU per request as
the worker spends answering it, on the same two cores; above ~1,000 requests/s
its own delays become a large part of the tail it reports. Vegeta sends the
same requests for a fraction of that. Its attack paces request i at
start + i / rate; each result carries its sequence number, when it was sent
and how long the answer took, so latency is still counted from the due time
(a request Vegeta sent late counts its lateness, as in `bench.http_load`).

The binary is built once by `bench/install-vegeta.sh` (`make vegeta`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from bench.latency import step_result

REPO = Path(__file__).resolve().parents[1]
INSTALLER = REPO / "bench" / "install-vegeta.sh"
NANOSECOND = 1e-9
_FRACTION = re.compile(r"(\.\d{6})\d+")


def vegeta_binary() -> str:
    """The path of the pinned Vegeta, built on first use (a Go toolchain and its module proxy)."""
    return subprocess.run(["bash", str(INSTALLER)], check=True, capture_output=True, text=True).stdout.strip()


def sent_at(timestamp: str) -> float:
    """Seconds since the epoch of a Vegeta result's RFC 3339 timestamp (nanoseconds cut to microseconds)."""
    return dt.datetime.fromisoformat(_FRACTION.sub(r"\1", timestamp.replace("Z", "+00:00"))).timestamp()


def step_statistics(results: list[dict], rate: float, duration: float, ok_status: int) -> dict:
    """What `bench.http_load.open_loop` reports, from Vegeta's results (its `encode -to json` lines)."""
    results = sorted(results, key=lambda r: r["seq"])
    start = sent_at(results[0]["timestamp"]) if results else 0.0
    by_status: dict[str, list[float]] = {}
    outcomes: Counter[str] = Counter()
    send_lags: list[float] = []
    for result in results:
        lag = max(0.0, sent_at(result["timestamp"]) - (start + result["seq"] / rate))
        send_lags.append(lag)
        if result["code"] == 0:  # no answer: a timeout or a connection error
            outcomes["timeout" if "timeout" in result["error"].lower() else "ClientError"] += 1
            continue
        by_status.setdefault(str(result["code"]), []).append(lag + result["latency"] * NANOSECOND)
        outcomes[str(result["code"])] += 1
    last = max((sent_at(r["timestamp"]) for r in results), default=start)
    return step_result(rate=rate, duration=duration, requests=len(results),
                       sent_per_second=round((len(results) - 1) / (last - start), 1) if last > start else None,
                       outcomes=outcomes, by_status=by_status, send_lags=send_lags, ok_status=ok_status)


def body_of(result: dict) -> bytes:
    return base64.b64decode(result.get("body") or b"")


async def attack(binary: str, targets: list[str], rate: float, duration: float, timeout: float,
                 connections: int) -> list[dict]:
    """Vegeta's results of `targets` (HTTP-format lines, taken round robin) at `rate` for `duration` seconds."""
    with tempfile.TemporaryDirectory(prefix="vegeta-") as scratch:
        targets_file, results_file = Path(scratch) / "targets", Path(scratch) / "results.bin"
        targets_file.write_text("\n".join(targets) + "\n")
        attack_ = await asyncio.create_subprocess_exec(
            binary, "attack", f"-targets={targets_file}", "-format=http", f"-rate={rate:g}/1s",
            f"-duration={duration:g}s", f"-timeout={timeout:g}s", f"-max-connections={connections}",
            f"-connections={connections}", "-keepalive=true", f"-output={results_file}",
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "GOMAXPROCS": "1"})
        try:
            _, stderr = await attack_.communicate()
        finally:
            if attack_.returncode is None:  # cancelled (the bench or soak was stopped): stop the attack too
                attack_.kill()
                await attack_.wait()
        if attack_.returncode != 0:
            raise RuntimeError(f"vegeta attack failed ({attack_.returncode}): {stderr.decode()[-2000:]}")
        encode = await asyncio.create_subprocess_exec(
            binary, "encode", "-to=json", str(results_file), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await encode.communicate()
        if encode.returncode != 0:
            raise RuntimeError(f"vegeta encode failed ({encode.returncode}): {stderr.decode()[-2000:]}")
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]
