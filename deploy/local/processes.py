"""Helpers shared by the Kafka and PostgreSQL halves of the local stack.

Files (atomic writes, KEY=value files, pid files, log tails), ports (is one
free, pick free ones), processes (alive, wait until gone, run a command) and
the lock that serialises ``up``/``down`` on one state dir. Standard library only.
"""

import contextlib
import fcntl
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOG_TAIL_LINES = 40

# Popen objects of brokers started by this process, so stop_kafka() can reap
# them (otherwise a stopped child lingers as a zombie and looks alive).
_CHILDREN: dict[int, subprocess.Popen] = {}


class StackError(RuntimeError):
    """A stack component could not be set up, started or stopped."""


def log(message: str) -> None:
    """Progress output for the CLI (stderr, so `env` output stays clean)."""
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def write_atomic(path: Path, text: str) -> None:
    """Write a file via rename so readers never see a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_kv(path: Path) -> dict[str, str]:
    """Parse simple KEY=value lines (values may be shell-quoted)."""
    result: dict[str, str] = {}
    if not path.is_file():
        return result
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            parts = shlex.split(value) if value.strip() else [""]
            result[key.strip()] = parts[0] if parts else ""
    return result


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last lines of a log file, for error messages."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    return "\n".join(content[-lines:])


def with_log_tail(message: object, log_file: Path) -> str:
    """An error message followed by the end of the component's log."""
    return f"{message}\n--- last {LOG_TAIL_LINES} lines of {log_file} ---\n{_tail(log_file)}"


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port (or on the wildcard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR so TIME_WAIT leftovers of a stopped server do not
        # count as busy; the servers themselves bind with it too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports handed out by free_ports() start here (below: well-known and registered services).
FIRST_PICKED_PORT = 10000


def ephemeral_ports() -> range:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_ports(count: int) -> list[int]:
    """Distinct ports nothing listens on right now, outside the kernel's ephemeral range.

    A port from bind(0) is an ephemeral one, which the kernel also gives to
    outgoing connections: with thousands of them open (make soak's load), one
    took the port before the broker started on it could bind it ("Address
    already in use"). A port outside that range is never taken so.
    """
    ephemeral = ephemeral_ports()
    candidates = [port for port in range(FIRST_PICKED_PORT, 65536) if port not in ephemeral]
    random.shuffle(candidates)  # two processes picking at once rarely pick the same
    chosen = []
    for port in candidates:
        if port_is_free(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise StackError(f"fewer than {count} free ports outside the ephemeral range {ephemeral.start}-{ephemeral.stop - 1}")


def read_pid(path: Path) -> int | None:
    """Pid stored as the first line of a file, or None."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """argv of a running process, [] if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def register_child(proc: subprocess.Popen) -> None:
    """Remember a process we started, so pid_alive() can reap it once it exits."""
    _CHILDREN[proc.pid] = proc


def forget_child(pid: int) -> None:
    """Drop a stopped process from the children registered above."""
    _CHILDREN.pop(pid, None)


def pid_alive(pid: int) -> bool:
    """True while any thread of pid runs (its sockets may still be open)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        # Our own child: poll() reaps it once every thread has exited.
        return child.poll() is None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    state = fields.get("State", "").split()[:1]
    # A zombie waiting for its (foreign) parent to reap it is dead, unless it
    # is a thread-group leader whose other threads are still shutting down.
    return state not in (["Z"], ["X"]) or int(fields.get("Threads", "1")) > 1


def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until pid exits; True if it did within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    return not pid_alive(pid)


def run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, raising StackError with its output if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise StackError(f"{what}: command not found: {cmd[0]}") from exc
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise StackError(f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{output}")
    return proc


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Serialise up/down on one state dir (parallel test workers may race)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


