"""Fixes for faust-streaming 0.15 that the no-loss guarantee depends on.

Which stream iterator: faust-streaming ships a Cython `StreamIterator`
(`faust/_cython/streams.pyx`), used unless `NO_CYTHON` is set or it fails to
import; its `after()` does the per-event ack bookkeeping inline instead of
calling `Consumer.ack`. The fixes hold on both paths, and the crash test runs on
both (`tests.integration.test_agent_crash`); `stream_iterator()` says which
one a worker uses, and the worker logs it at start.

0. The stream never acknowledges on its own (`ManualAckStream`, installed with
   Faust's public `Stream` setting). Faust's `take`/`noack_take` implement
   manual acks by setting the stream-wide `Stream.enable_acks` to False while
   a background task (the passive drainer) iterates the stream and acks every
   event it passes on when that flag is True. When the agent body raises, its
   `noack_take` generator is finalized and its `finally` restores
   `enable_acks=True` and removes the buffering processor, while the drainer
   keeps running. Until the supervisor restarts the agent, the drainer acks
   every message already fetched, unprocessed; once the head of the partition
   is acknowledged (after a re-read), the commit moves past all of them. Both
   iterators do this (the Cython one in `after()`, the Python one in the
   `finally` of `_py_aiter`). With `enable_acks` pinned to False only
   `stream.ack(event)` acknowledges, and AckAfterWrite (app/sink/) calls it after the write.
   (faust-streaming/faust#315, robinhood/faust#604.)

1. Skipped messages are acknowledged. During a rebalance the Python iterator
   skips messages that arrive while flow control is suspended or that belong
   to the previous consumer generation, and acknowledges them ("otherwise the
   lag would increase"); the Cython iterator skips them without tracking or
   acknowledging them. Under the same two conditions `Consumer.ack` now
   releases an acknowledgement (so a rebalance does not wait for it) without
   its offset counting: this also covers the agent's own acks of a batch whose
   partition was revoked while it was written. The partition is read again from
   the committed offset, and the idempotent writes absorb whatever was in fact
   processed.

2. Commits jump a gap at the head. `Consumer._new_offset` only refuses to commit
   past unacknowledged messages at the head when the committed offset is truthy
   (so never for a partition without a commit, nor for offset 0, both stored as
   None) and the gap is longer than one message. The wrapper refuses whenever
   the next offset to commit (the committed one, else the partition's start
   found by fix 3) is neither acknowledged nor a known gap (transaction markers,
   compaction), and lets Faust decide otherwise.

3. Uncommitted partitions resume where the fetcher was. After a rebalance Faust
   seeks each partition to its committed offset, but a partition with none (or
   with 0, which Faust stores as "none") is left at the fetch position, beyond
   messages fetched before the rebalance and dropped by it. Such partitions are
   now sought to their earliest offset, which is where they would start anyway.

4. A message that was never processed is not always fetched again (skipped in
   a rebalance, or dropped from the buffer of an agent that crashed), leaving
   its partition stalled behind it: the timer of `app.faust_compat.stalls`
   seeks such a partition back to its committed offset (re-reading is
   harmless: writes are idempotent).

5. Commits do not crawl after a gap. When `_new_offset` folds a gap (offsets
   the fetcher jumped) into the acknowledged offsets, it appends every offset
   of the gap, also those already acknowledged (the gap Faust records always
   includes the message that revealed it, and a re-read after a seek can
   acknowledge more of it). Its search for the first run of consecutive
   offsets then stops at the first duplicate: each commit moved one offset,
   one per commit interval, and a partition 600 messages behind took half an
   hour to commit (seen in the chaos run after a broker restart and a full
   table disk; its offset audit reports such a partition as `uncommitted`).
   The gap is now folded in first, without duplicates; what counts as
   processed is unchanged.

Seen before the fixes as commands missing from PostgreSQL after two workers
rebalanced, and after an agent raised, with the group's offsets at the end of
the topic; `tests.integration.test_workers` and
`tests.integration.test_agent_crash` check both.

Besides the fixes, one change of cost, not of correctness: fewer, fuller
fetches (`install_fetch_batching`, below).
"""

from __future__ import annotations

import faust
from faust import streams as faust_streams
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from app.faust_compat import kafka_record_reader

_original_ack = Consumer.ack
_original_new_offset = Consumer._new_offset
_original_perform_seek = Consumer.perform_seek


def _ack_processed_only(self: Consumer, message) -> bool:
    app = self.app
    if message.generation_id != app.consumer_generation_id or not app.flow_control.is_active():
        with ack_lock:
            message.acked = True
            self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)
        return False
    return _original_ack(self, message)


# Where each uncommitted partition starts (its earliest offset), found at assignment
# (fix 3): for such a partition Faust's own check has nothing to compare with.
_start_offsets: dict = {}


def next_offset_to_commit(committed: int | None, start: int | None) -> int | None:
    """The offset whose acknowledgement must come before any commit: the committed one, else the start.

    Faust stores a committed offset of 0 as None too, which the start covers.
    """
    return committed if committed is not None else start


def _fold_gaps_without_duplicates(self: Consumer, tp) -> None:
    """Fix 5: what `Consumer._new_offset` does with the gaps below the highest acknowledged offset, but
    appending only the offsets not acknowledged yet (and indexing them, so a later ack does not repeat them)."""
    acked, gaps = self._acked[tp], self._gap[tp]
    if not acked or not gaps:
        return
    highest = max(acked)
    folded = sorted(gaps.overlap(0, highest), key=lambda interval: interval.begin)
    if not folded:
        return
    index = self._acked_index[tp]
    missing = [offset for interval in folded for offset in range(interval.begin, interval.end) if offset not in index]
    acked.extend(missing)
    index.update(missing)
    gaps.chop(0, max(folded[-1].end - 1, highest + 1))


def _new_offset_without_head_gap(self: Consumer, tp):
    _fold_gaps_without_duplicates(self, tp)
    head = next_offset_to_commit(self._committed_offset[tp], _start_offsets.get(tp))
    if head is not None and head >= 0 and self._acked[tp]:
        if head not in self._acked_index[tp] and not self._gap[tp].overlaps(head):
            return None  # the next offset to commit has not been processed yet
    return _original_new_offset(self, tp)


async def _perform_seek_from_start_when_uncommitted(self: Consumer) -> None:
    await _original_perform_seek(self)
    uncommitted = [
        tp for tp in self.assignment()
        if self.app.topics.acks_enabled_for(tp.topic) and self._committed_offset.get(tp) is None
    ]
    if uncommitted:
        for tp, offset in (await self.earliest_offsets(*uncommitted)).items():
            _start_offsets[tp] = offset
            await self.seek(tp, offset)


class ManualAckStream(faust.Stream):
    """A stream whose events are acknowledged only by `stream.ack(event)` (fix 0)."""

    @property
    def enable_acks(self) -> bool:
        return False

    @enable_acks.setter
    def enable_acks(self, value: bool) -> None:
        pass  # take()/noack_take() toggle it, and restore it from a finally that may run late


def stream_iterator() -> str:
    """`cython` or `python`: the stream iterator this process uses."""
    return "cython" if faust_streams._CStreamIterator is not None else "python"


# The stream iterators fixes 0 and 1 were written for: how each acknowledges is what they correct.
CYTHON_STREAM_ITERATOR = "faust._cython.streams.StreamIterator"
PYTHON_STREAM_ITERATOR_METHODS = ("_c_aiter", "_py_aiter")


def check_stream_iterator(cython_iterator: type | None = None, stream_class: type = faust.Stream) -> str:
    """Refuse a stream iterator the fixes were not written for; returns `cython` or `python`."""
    iterator = faust_streams._CStreamIterator if cython_iterator is None else cython_iterator
    missing = [name for name in PYTHON_STREAM_ITERATOR_METHODS if not hasattr(stream_class, name)]
    if missing:
        raise RuntimeError(f"faust.Stream has no {', '.join(missing)}: its iteration changed, and "
                           "`app.faust_compat.fixes` (fixes 0 and 1) must be re-checked against it")
    if iterator is None:
        return "python"
    name = f"{iterator.__module__}.{iterator.__qualname__}"
    if name != CYTHON_STREAM_ITERATOR:
        raise RuntimeError(f"Faust iterates streams with {name}, but `app.faust_compat.fixes` was written for "
                           f"{CYTHON_STREAM_ITERATOR} or the Python iterator: re-check fixes 0 and 1 against it")
    return "cython"


# Fewer, fuller fetches. Faust builds its consumer with fetch_max_wait_ms=1500 and aiokafka's
# fetch_min_bytes=1, and has a setting for neither: the broker answers a fetch as soon as one record
# is there. Under a trickle of commands each fetch returns a record or two, and each costs a round
# trip between Faust's consumer thread and the event loop (docs/performance.md, "Fewer, fuller
# fetches"). aiokafka reads both values when the consumer starts, and has no public setter for them.

_original_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def batch_fetches(consumer, min_bytes: int, max_wait_seconds: float):
    """An aiokafka consumer not started yet, set to have the broker gather `min_bytes` or wait
    `max_wait_seconds` before it answers a fetch."""
    consumer._fetch_min_bytes = min_bytes
    consumer._fetch_max_wait_ms = int(max_wait_seconds * 1000)
    return consumer


def install_fetch_batching(min_bytes: int, max_wait_seconds: float) -> None:
    """Every consumer Faust creates for a worker from now on batches its fetches so."""

    def create_worker_consumer(self: AIOKafkaConsumerThread, transport):
        return batch_fetches(_original_create_worker_consumer(self, transport), min_bytes, max_wait_seconds)

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


# Private Faust state the service reads, fenced here (`tests.unit.test_faust_fixes`
# fails when an upgrade renames it; `tests.unit.test_faust_private_api` keeps it here).

def committed_offsets(consumer: Consumer) -> dict:
    """TP -> the offset this worker last committed (0 or absent when none)."""
    return dict(consumer._committed_offset)


def rocksdb_databases(store) -> dict:
    """A RocksDB table store's open databases by partition (active and standby): `Store._dbs`."""
    return store._dbs


def kafka_producer(app: faust.App):
    """The aiokafka producer under Faust's producer, started with the app (for metadata requests)."""
    return app.producer._ensure_producer()


# The faust-streaming releases these fixes were written and tested against.
SUPPORTED_FAUST = "0.15."


def check_faust_version(version: str = faust.__version__) -> None:
    """Refuse to start on a Faust the fixes were not written for: they patch its internals."""
    if not version.startswith(SUPPORTED_FAUST):
        raise RuntimeError(
            f"faust-streaming {version} is installed, but `app.faust_compat.fixes` was written for {SUPPORTED_FAUST}x: "
            "re-check each fix against the new release (and its tests) before changing SUPPORTED_FAUST"
        )


def apply(tolerant_batch: type | None = None) -> None:
    """Check the Faust in use, then patch its consumer (fixes 1-3; fix 0 is the app's Stream setting)
    and aiokafka's record reader (`app.faust_compat.kafka_record_reader`)."""
    check_faust_version()
    check_stream_iterator()
    kafka_record_reader.install(tolerant_batch)  # a record aiokafka cannot decode must not crash the fetcher
    Consumer.ack = _ack_processed_only
    Consumer._new_offset = _new_offset_without_head_gap
    Consumer.perform_seek = _perform_seek_from_start_when_uncommitted
