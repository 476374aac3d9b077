"""Every change the worker makes to Faust's and aiokafka's behaviour, behind one fence.

Nothing here patches at import: `install()` is called once, when a worker
starts (`app.main`), and checks the versions each fix was written for first.
"""

from __future__ import annotations


def install(tolerant_batch: type | None = None) -> None:
    """Check Faust and aiokafka, then install the consumer fixes, the tolerant record reader and
    fewer, fuller fetches (KAFKA_FETCH_MIN_BYTES, KAFKA_FETCH_MAX_WAIT_SECONDS).

    `tolerant_batch` replaces the reader of a batch aiokafka cannot decode (the tests' faulty worker
    passes one that refuses).
    """
    from app.faust_compat import fixes
    from app.settings import settings

    fixes.apply(tolerant_batch)
    fixes.install_fetch_batching(settings.kafka_fetch_min_bytes, settings.kafka_fetch_max_wait_seconds)
