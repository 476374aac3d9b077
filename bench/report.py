"""The live bench's result: a table on stdout, a JSON file, Markdown and a plot.

    python -m bench.report bench/results/live-....json              # the table again
    python -m bench.report bench/results/live-....json --markdown   # tables for docs/performance.md
    python -m bench.report bench/results/live-....json --plot docs/performance-latency.png

The plot needs matplotlib (the `bench` extra: `pip install -e '.[bench]'`);
nothing else here does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.machine import speed_line

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = RESULTS_DIR.parents[1]


def _rate(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _num(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def throughput_rows(result: dict) -> list[tuple[str, str, str, str]]:
    """(what, events/s, CPU µs per event, ratio) for every consumer of the pre-loaded topic."""
    ceilings, bare = result["ceilings"], result["bare_faust"]
    rows = [
        ("pre-load: aiokafka producer, acks=all", _rate(result["preload"]["events_per_second"]), "", ""),
        ("raw aiokafka consume + JSON decode", _rate(ceilings["raw_consume"]["events_per_second"]), "", ""),
        (f"raw PostgreSQL insert (unnest, {ceilings['raw_insert']['batch']:,} per batch, one table)",
         _rate(ceilings["raw_insert"]["events_per_second"]), "", ""),
        ("bare Faust agent (noack_take + ack)", _rate(bare["events_per_second"]),
         _num(bare["cpu_us_per_event"], 0), "1.00× bare"),
    ]
    replay = result.get("replay") or {}
    if "events_per_second" in replay:
        cpu = replay.get("cpu_seconds")
        rows.append(("replay into an empty database (python -m app replay's path)", _rate(replay["events_per_second"]),
                     _num(cpu / replay["events"] * 1e6, 0) if cpu else "",
                     f"{replay['events_per_second'] / ceilings['raw_insert']['events_per_second']:.2f}× raw insert"))
    for run in result["workers"]:
        ratio = f"{run['ratio_to_bare_faust']:.2f}× bare"
        if "ratio_to_one_worker" in run:
            ratio += f", {run['ratio_to_one_worker']:.2f}× one worker"
        rows.append((f"project worker ×{run['processes']} (agent, table, fresh database)",
                     _rate(run["events_per_second"]), _num(run["cpu_us_per_event"], 0), ratio))
    return rows


def _loop_wait(step: dict) -> str:
    """The share of the step the server's event-loop thread waited for a core (results before it have none)."""
    waited = step.get("cpu_cores", {}).get("loop_waited_for_cpu")
    return "–" if waited is None else f"{waited:.0%}"


def _stolen(step: dict) -> str:
    """The cores the hypervisor gave other guests during the step (results before it have none)."""
    return _num(step.get("cpu_cores", {}).get("stolen"), 2)


def http_rows(steps: list[dict]) -> list[tuple[str, ...]]:
    rows = []
    for s in steps:
        errors = ", ".join(f"{k}: {v}" for k, v in s["errors"].items()) or "0"
        rows.append((_rate(s["rate"]), _rate(s["sent_per_second"]), f"{s['ok']:,}", _num(s["p50_ms"]),
                     _num(s["p99_ms"]), _num(s["max_ms"]), errors, _loop_wait(s), _stolen(s)))
    return rows


HTTP_HEADER = ("rate /s", "sent /s", "ok", "p50 ms", "p99 ms", "max ms", "errors", "loop waited for a core",
               "cores stolen")
THROUGHPUT_HEADER = ("over the same topic", "events/s", "CPU µs/event", "ratio")


def _text_table(header: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "  ") -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = []
    for row in (header, *rows):
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _http_title(result: dict, method: str) -> str:
    http = result["http"]
    title = f"HTTP {method.upper()}, open loop, {result['parameters']['http_duration_seconds']:g} s per rate"
    title += f", sent by {http.get('client', 'python')}"  # results before the choice were all Python's
    if method == "get":
        title += f", {http['get_background_events_per_second']:g} events/s produced to Kafka meanwhile"
    return title


FLOOR_HEADER = ("rate /s", "p50 ms", "p99 ms", "floor cores", "worker cores", "worker / floor",
                "floor's loop waited for a core", "cores stolen")


def floor_rows(http: dict, method: str = "get") -> list[tuple[str, ...]]:
    """The floor's steps beside the worker's cores at the same rates (results before the floor have none)."""
    vs = {row["rate"]: row for row in http.get(f"{method}_cores_vs_floor", [])}
    rows = []
    for step in http.get(f"floor_{method}", []):
        row = vs.get(step["rate"], {})
        rows.append((_rate(step["rate"]), _num(step["p50_ms"]), _num(step["p99_ms"]),
                     _num(row.get("floor_cores"), 2), _num(row.get("worker_cores"), 2),
                     f"{row['ratio']:.2f}×" if row.get("ratio") else "", _loop_wait(step),
                     _stolen(step)))
    return rows


FLOOR_TITLES = {
    "post": "POST floor: the same steps against bench/bare_faust.py (Faust's web layer, an acks=all publish, "
            "its agent taking what was posted; nothing of ours)",
    "get": "GET floor: the same steps against bench/bare_faust.py (Faust's web layer, a fixed record, nothing of ours)",
}


def _best(result: dict) -> str:
    best = result["http"]["max_rate_p99_under_50ms"]
    return (f"highest rate with p99 < 50 ms and no error (at it and every lower rate): "
            f"POST {_rate(best['post'])}/s, GET {_rate(best['get'])}/s")


def record_reader_line(result: dict) -> str:
    """The reader's cost per record: aiokafka's, what the worker's adds, and the fallback."""
    r = result.get("record_reader")
    if not r:
        return ""
    return (f"record reader, CPU µs per record: aiokafka {r['aiokafka_us_per_record']:.2f}, the worker's "
            f"{r['worker_reader_us_per_record']:.2f} (+{r['added_us_per_record']:.2f}); a batch with a header "
            f"name that is not UTF-8 {r['fallback_us_per_record']:.2f} ({r['fallback_ratio_to_aiokafka']}× aiokafka)")


def recovery_rows(results: list[dict]) -> list[tuple[str, ...]]:
    """Report rows: history, shape, changelog, fresh / restart / scale-out / takeover seconds, ids/s, GET p99."""
    out = []
    for r in results:
        changelog = r["changelog"]
        out.append((
            f"{r['history']:,}", r["shape"], f"{changelog['values']:,} + {changelog['tombstones']:,}",
            f"{r['fresh']['seconds_to_ready']:.1f}", f"{r['restart']['seconds_to_ready']:.1f}",
            f"{r['scale_out']['seconds_to_ready']:.1f}",
            f"{r['scale_out']['running_worker_gets']['p99_ms'] or 0:.0f}",
            f"{_seconds(r['standby_takeover']['seconds_to_keys_served_from_table'])} / "
            f"{r['standby_takeover']['seconds_to_ready_with_all_partitions']:.1f} "
            f"({r['standby_takeover']['records_read_at_takeover']:,} read)",
            f"{r['fresh']['records_read_per_second']:,.0f}",
            f"{r['expired_get']['p99_ms']:.1f}" if "expired_get" in r else "",
        ))
    return out


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


RECOVERY_HEADER = ("history", "changelog", "values + tombstones", "fresh s", "restart s", "scale-out s",
          "GET p99 ms during scale-out", "standby takeover s: keys from table / ready", "ids read/s (fresh)", "expired GET p99 ms")


def text(result: dict) -> str:
    p = result["parameters"]
    load = result["host"].get("load_average_at_start")
    parts = [
        f"Live path, {p['events']:,} events over {p['partitions']} partitions "
        f"(started {result['started_at']}, {result['wall_seconds']:.0f} s; {result['host']['cpus']} CPUs, "
        f"load average {load[0] if load else '?'} at start)",
        _text_table(THROUGHPUT_HEADER, throughput_rows(result)),
    ]
    if speed := speed_line(result["host"]):
        parts.append("  " + speed)
    if "skipped" in (result.get("replay") or {}):
        parts.append(f"  replay: skipped ({result['replay']['skipped']})")
    if record_reader_line(result):
        parts.append("  " + record_reader_line(result))
    for method in ("post", "get"):
        parts += ["", _http_title(result, method), _text_table(HTTP_HEADER, http_rows(result["http"][method]))]
    for method in ("post", "get"):
        if floor_rows(result["http"], method):
            parts += ["", FLOOR_TITLES[method], _text_table(FLOOR_HEADER, floor_rows(result["http"], method))]
    parts += ["", _best(result)]
    if result.get("recovery"):
        parts += ["", recovery_title(result), _text_table(RECOVERY_HEADER, recovery_rows(
            result["recovery"]["runs"]))]
    return "\n".join(parts)


def markdown(result: dict) -> str:
    p = result["parameters"]
    speed = speed_line(result["host"])
    parts = [
        f"{p['events']:,} events over {p['partitions']} partitions, run {result['started_at']} "
        f"on {result['host']['cpus']} CPUs ({result['host']['platform']}).",
        *([speed[0].upper() + speed[1:] + "."] if speed else []),
        "",
        _markdown_table(THROUGHPUT_HEADER, throughput_rows(result)),
    ]
    if record_reader_line(result):
        parts += ["", record_reader_line(result)[0].upper() + record_reader_line(result)[1:] + "."]
    for method in ("post", "get"):
        parts += ["", f"**{_http_title(result, method)}**", "",
                  _markdown_table(HTTP_HEADER, http_rows(result["http"][method]))]
    for method in ("post", "get"):
        if floor_rows(result["http"], method):
            parts += ["", f"**{FLOOR_TITLES[method]}**", "",
                      _markdown_table(FLOOR_HEADER, floor_rows(result["http"], method))]
    parts += ["", _best(result) + "."]
    if result.get("recovery"):
        parts += ["", f"**{recovery_title(result)}**", "",
                  _markdown_table(RECOVERY_HEADER, recovery_rows(result["recovery"]["runs"]))]
    return "\n".join(parts)


def recovery_title(result: dict) -> str:
    ratios = ", ".join(f"{int(h):,} ids: {r}" for h, r in result["recovery"]["window_ratio"].items())
    return (f"Table recovery (fresh worker with a {result['recovery']['window_fraction']:.0%} window / with only those "
            f"ids: {ratios}; target <= 1.5)")


def code_version() -> dict:
    """The commit measured, and whether the work tree had changes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def write_json(result: dict, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = result["started_at"].replace("-", "").replace(":", "").split(".")[0]
    path = directory / f"live-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def plot(result: dict, path: Path) -> Path:
    """Latency (p50, p99, max) against offered rate, POST and GET side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, method in zip(axes, ("post", "get")):
        steps = [s for s in result["http"][method] if s["p50_ms"] is not None]
        rates = [s["rate"] for s in steps]
        for key, style in (("p50_ms", "o-"), ("p99_ms", "s-"), ("max_ms", "^:")):
            ax.plot(rates, [s[key] for s in steps], style, label=key.replace("_ms", ""))
        for s in steps:
            if s["error_count"]:
                ax.annotate(f"{s['error_count']:,} errors", (s["rate"], s["p99_ms"]), textcoords="offset points",
                            xytext=(4, 6), fontsize=8, color="firebrick")
        ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="50 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(rates, [f"{r:,.0f}" for r in rates])
        ax.minorticks_off()
        ax.set_xlabel("offered rate (requests/s)")
        ax.set_title(method.upper())
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("latency from scheduled send (ms)")
    axes[0].legend()
    fig.suptitle(f"One worker, open loop, {result['parameters']['http_duration_seconds']:g} s per rate "
                 f"({result['started_at'][:10]}, {result['host']['cpus']} CPUs)")
    return save_figure(fig, path, dpi=110)


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Lay out, write and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path, help="a JSON file written by python -m bench")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="write the latency plot there")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    print(markdown(result) if args.markdown else text(result))
    if args.plot:
        print(f"plot: {plot(result, args.plot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
