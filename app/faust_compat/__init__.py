"""Every change the worker makes to Faust's and aiokafka's behaviour, behind one fence.

Nothing here patches at import: `install()` is called once, when a worker
starts (`app.main`), and checks the versions each fix was written for first.
"""

from __future__ import annotations


def install(tolerant_batch: type | None = None) -> None:
    """Check Faust and aiokafka, then install the consumer fixes and the tolerant record reader.

    `tolerant_batch` replaces the reader of a batch aiokafka cannot decode (the tests' faulty worker
    passes one that refuses).
    """
    from app.faust_compat import fixes

    fixes.apply(tolerant_batch)
