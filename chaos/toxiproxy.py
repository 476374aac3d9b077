"""Toxiproxy for the chaos run: the server as a subprocess, driven through its JSON HTTP API.

    server = ToxiproxyServer(workdir).start()          # binary from chaos/install-toxiproxy.sh
    async with Toxiproxy(server.api) as toxi:
        await toxi.proxy("pg0", listen_port, upstream_port)
        await toxi.add_toxic("pg0", "latency", latency=300)
        await toxi.remove_toxic("pg0", "latency")
        await toxi.enable("pg0", False)                # refuse and cut every connection
        await toxi.reset()                             # every proxy enabled, no toxics
    server.stop()

The HTTP API (https://github.com/Shopify/toxiproxy#http-api): POST /proxies,
POST /proxies/{name} (enabled), POST /proxies/{name}/toxics, DELETE
/proxies/{name}/toxics/{toxic}, POST /reset. Plain aiohttp: no client library.
Toxic types used by chaos/run.py: latency (latency, jitter ms), bandwidth (rate
KB/s), timeout (timeout ms; 0 holds the data and never closes: a black hole),
reset_peer (timeout ms, then a TCP RST).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
INSTALLER = REPO / "chaos" / "install-toxiproxy.sh"


def install() -> Path:
    """Build (once) and return the toxiproxy-server binary; the project's installer, not a system package."""
    result = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"{INSTALLER} failed: {result.stderr[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


class ToxiproxyServer:
    """toxiproxy-server on 127.0.0.1:<port>, its log in workdir/toxiproxy.log."""

    def __init__(self, workdir: Path, port: int, binary: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.binary = binary
        self.process: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "ToxiproxyServer":
        binary = self.binary or install()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "toxiproxy.log", "ab") as log:
            self.process = subprocess.Popen([str(binary), "-host", "127.0.0.1", "-port", str(self.port)],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        until = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.api}/version", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                if self.process.poll() is not None or time.monotonic() > until:
                    self.stop()
                    raise RuntimeError(f"toxiproxy-server did not answer on {self.api}; see "
                                       f"{self.workdir / 'toxiproxy.log'}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None


class ToxiproxyError(RuntimeError):
    pass


class Toxiproxy:
    """The API of one toxiproxy-server."""

    def __init__(self, api: str) -> None:
        self.api = api.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Toxiproxy":
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()

    async def _call(self, method: str, path: str, body: dict | None = None) -> dict | list | None:
        assert self.session is not None, "use `async with Toxiproxy(api)`"
        async with self.session.request(method, f"{self.api}{path}", json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise ToxiproxyError(f"{method} {path} -> {response.status}: {text[:300]}")
            return await response.json(content_type=None) if text.strip() else None

    async def proxy(self, name: str, listen_port: int, upstream_port: int) -> None:
        """A proxy 127.0.0.1:listen_port -> 127.0.0.1:upstream_port."""
        await self._call("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{listen_port}",
                                               "upstream": f"127.0.0.1:{upstream_port}", "enabled": True})

    async def enable(self, name: str, enabled: bool = True) -> None:
        """Disabled: the proxy closes its listener and every open connection."""
        await self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    async def add_toxic(self, proxy: str, kind: str, *, name: str | None = None, stream: str = "downstream",
                        toxicity: float = 1.0, **attributes: int) -> str:
        """Add a toxic of type `kind` (named `kind`-`stream` unless given); returns its name."""
        toxic = name or f"{kind}-{stream}"
        await self._call("POST", f"/proxies/{proxy}/toxics", {"name": toxic, "type": kind, "stream": stream,
                                                               "toxicity": toxicity, "attributes": attributes})
        return toxic

    async def remove_toxic(self, proxy: str, toxic: str) -> None:
        await self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic}")

    async def toxics(self, proxy: str) -> list[dict]:
        return list(await self._call("GET", f"/proxies/{proxy}/toxics") or [])

    async def proxies(self) -> dict:
        return dict(await self._call("GET", "/proxies") or {})

    async def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        await self._call("POST", "/reset")
