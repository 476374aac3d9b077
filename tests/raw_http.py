"""HTTP/1.1 requests written byte by byte, for bodies no client library sends: chunked ones that
never end, a Content-Length the body never reaches."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def chunked(path: str, chunks: list[bytes], finish: bool = True) -> bytes:
    """A POST with a chunked body; without `finish`, the last chunk never comes."""
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    body = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks)
    return head.encode() + body + (b"0\r\n\r\n" if finish else b"")


def sized(path: str, declared: int, sent: bytes) -> bytes:
    """A POST declaring a Content-Length of `declared` bytes, sending `sent` (fewer: it never ends)."""
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {declared}\r\n"
            "Content-Type: application/json\r\n\r\n").encode() + sent


async def send(host: str, port: int, request: bytes, timeout: float = 30) -> Answer:
    """Write `request` and read one answer (its Content-Length); the connection stays open meanwhile,
    so a body that does not end stays unended until the server answers."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), timeout)
        return Answer(int(status_line.split()[1]), headers, body)
    finally:
        writer.close()


async def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer until the server closes: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body
