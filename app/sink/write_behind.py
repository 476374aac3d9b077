"""WriteBehind: batches written one after another in a task of their own, while the next is collected."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Awaitable, Callable


class WriteBehind:
    """Writes and acknowledges batches in order, in a task of its own, while the caller collects the next.

    The agent spends about as long iterating a batch out of Faust as PostgreSQL
    takes to write one; doing both at once is the throughput. Batches are still
    written strictly one after another (the first message of a command id wins,
    across batches too), and each is acknowledged only after its write, in order.
    At most one batch waits while another is being written.
    """

    def __init__(self, write: Callable[[list], Awaitable[None]]) -> None:
        self._write = write
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        self._task: asyncio.Task | None = None

    async def submit(self, batch: list) -> None:
        """Queue a batch; waits while the previous one is still queued."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="write-behind")
        put = asyncio.ensure_future(self._queue.put(batch))
        await asyncio.wait([put, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            put.cancel()
            self._task.result()  # the writer ended: raise its error here (nothing was acknowledged)
            raise RuntimeError("the write-behind task ended")

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get()
            await self._write(batch)

    async def close(self) -> None:
        """Stop writing; a batch not written is not acknowledged, and is read again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # an error was raised by submit
                await self._task
            self._task = None
