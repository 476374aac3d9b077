"""AckAfterWrite: the one place that decides when a batch of events is acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Awaitable, Callable, Sequence

from app.domain.batch_plan import ConsumedMessage
from app.domain.records import SourcePosition
from app.sink.batch_writer import BatchWriter
from app.sink.write_behind import WriteBehind

BREAKER_TRIAL_INTERVAL_SECONDS = 1.0


class AckAfterWrite:
    """Writes each batch through the BatchWriter, then acknowledges every event of it.

    - Acknowledged only after `BatchWriter.write` returned: the rows are in
      PostgreSQL, the query table's changelog and the dead-letter topic. Nothing
      else acknowledges (the stream never does on its own: `app.faust_compat.fixes`).
    - `write` raises nothing but cancellation, so no batch is acknowledged half done.
    - Batches are written behind the caller's loop (WriteBehind), strictly in
      order, while it collects the next; acknowledgements follow in the same order.
    - While the PostgreSQL breaker is half-open and nothing is written, a ping a
      second finishes its trial.
    """

    def __init__(self, writer: BatchWriter, ack: Callable[[object], Awaitable],
                 on_writing: Callable[[bool], None] = lambda active: None,
                 on_acked: Callable[[], None] = lambda: None) -> None:
        self.writer = writer
        self._ack = ack
        self._on_writing = on_writing
        self._on_acked = on_acked
        self._writing = False
        self._behind = WriteBehind(self._write_and_ack)
        self._trials: asyncio.Task | None = None

    async def __aenter__(self) -> AckAfterWrite:
        self._trials = asyncio.create_task(self._keep_trialling_breaker(), name="breaker-trials")
        return self

    async def __aexit__(self, *exc_info) -> None:
        """Stop; a batch not yet written is not acknowledged, and is read again by the next owner."""
        await self._behind.close()
        if self._trials is not None:
            self._trials.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trials

    async def submit(self, events: Sequence) -> None:
        """Queue a batch of Faust events; waits while the previous one is still queued."""
        await self._behind.submit(list(events))

    async def _write_and_ack(self, events: list) -> None:
        self._writing = True
        self._on_writing(True)
        try:
            await self.writer.write([consumed(event) for event in events])
            for event in events:
                await self._ack(event)
        finally:  # a write that raised or was cancelled is not under way any more either
            self._writing = False
            self._on_writing(False)
        self._on_acked()

    async def _keep_trialling_breaker(self) -> None:
        while True:
            await asyncio.sleep(BREAKER_TRIAL_INTERVAL_SECONDS)
            if not self._writing:  # a write is the trial then
                await self.writer.try_half_open_breaker()


def consumed(event) -> ConsumedMessage:
    """What the write policy reads of a Faust event."""
    message = event.message
    return ConsumedMessage(SourcePosition(message.topic, message.partition, message.offset),
                           message.value, message.headers, message.key)
