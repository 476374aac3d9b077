"""A worker started from the built image with `buildah run --isolation chroot`.

No Docker engine runs here and `podman run` cannot set rlimits, so the image is
run the way buildah can: a working container from the image (`buildah from`),
the environment set on it (`buildah config --env`), and the image's own
ENTRYPOINT + CMD run inside it. chroot isolation shares the host's network
(127.0.0.1 reaches the local Kafka and PostgreSQL) and PID namespace, so the
host sees the container's processes: tini, and the worker under it. A signal
for the container goes to tini, as a container runtime sends it to PID 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.processes import cmdline
from tests.deployment.tools import IMAGE, buildah, image_config

DATA_DIR = "/var/lib/timestamp-pipeline"


def _children(pid: int) -> list[int]:
    """Children of every thread of pid (buildah is Go: any thread may fork)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in children.read_text().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def ids(pid: int) -> tuple[list[int], list[int]]:
    """(real, effective, saved, fs) uids and gids of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return [int(v) for v in fields["Uid"].split()], [int(v) for v in fields["Gid"].split()]


@dataclass
class ImageWorker:
    env: dict[str, str]
    log_path: Path
    data_dir: Path
    port: int
    image: str = IMAGE
    # Extra /etc/hosts entries (name -> address) of the container, as cluster DNS would answer.
    hosts: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"tp-test-{uuid.uuid4().hex[:8]}")
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ImageWorker":
        config = image_config(self.image)["Docker"]["config"]
        command = [*config["Entrypoint"], *(config.get("Cmd") or [])]
        add_hosts = [arg for host, address in self.hosts.items() for arg in ("--add-host", f"{host}:{address}")]
        buildah("from", "--pull=never", *add_hosts, "--name", self.name, self.image)
        env_args = [arg for key, value in self.env.items() for arg in ("--env", f"{key}={value}")]
        buildah("config", *env_args, self.name)
        # The volume of the image, as the data volume (a PVC in Kubernetes) is
        # mounted: a host directory owned by the image's user.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        uid, gid = (int(x) for x in config["User"].split(":"))
        os.chown(self.data_dir, uid, gid)
        volumes = ["-v", f"{self.data_dir}:{DATA_DIR}"]
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            ["buildah", "run", "--isolation", "chroot", *volumes, self.name, "--", *command],
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> tuple[int | None, int | None]:
        """(tini, the worker under it), as the host sees them."""
        if self.process is None:
            return None, None
        tini = next((p for p in descendants(self.process.pid) if cmdline(p)[:1] == ["/usr/bin/tini"]), None)
        if tini is None:
            return None, None
        worker = next((p for p in _children(tini)), None)
        return tini, worker

    async def wait_ready(self, timeout: float = 120) -> "ImageWorker":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker from the image exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if "[^Worker]: Ready" in self.log():
                return self
            await asyncio.sleep(0.5)
        raise TimeoutError(f"worker from the image not ready after {timeout}s; log: {self.log_path}")

    def terminate(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM to the container's init (tini); (exit code of `buildah run`, seconds to exit)."""
        tini, _ = self.pids()
        assert tini is not None, f"no tini process under buildah run; log:\n{self.log()[-3000:]}"
        started = time.monotonic()
        os.kill(tini, signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started

    def upper_dir(self) -> Path:
        """The container's own writable layer (overlay upperdir): what the process wrote to the image's filesystem."""
        mount_point = Path(buildah("mount", self.name).stdout.strip())
        assert mount_point.name == "merged", f"expected an overlay mount (…/merged), got {mount_point}"
        return mount_point.parent / "diff"

    def remove(self) -> None:
        if self.process is not None and self.process.poll() is None:
            tini, worker = self.pids()
            for pid in (worker, tini):
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if getattr(self, "log_file", None):
            self.log_file.close()
        buildah("rm", self.name, check=False)
