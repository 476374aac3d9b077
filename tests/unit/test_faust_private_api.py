"""Faust's private API is used in one module only, and is still there in the installed Faust."""

from __future__ import annotations

import re
from pathlib import Path

import faust
import pytest

from app.faust_compat import fixes as faust_fixes

REPO = Path(__file__).resolve().parents[2]
ADAPTER = REPO / "app" / "faust_compat" / "fixes.py"
# A private attribute of a Faust object: the app, its consumer/producer/monitor/router,
# a stream, event, table or store.
PRIVATE_FAUST_ACCESS = re.compile(
    r"\b(app|consumer|producer|monitor|router|stream|event|table|timestamps|store|data|conf)\._[a-z]\w*"
)


def test_no_module_but_the_adapter_reads_private_faust_attributes():
    offenders = []
    for package in ("app", "agents", "tables", "web"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == ADAPTER:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if PRIVATE_FAUST_ACCESS.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == [], "private Faust attributes outside app/faust_compat/fixes.py"


def test_the_private_state_the_adapter_reads_exists_in_the_installed_faust():
    app = faust.App("private-api-check", broker="kafka://127.0.0.1:1", store="memory://")
    assert faust_fixes.committed_offsets(app.consumer) == {}
    assert callable(app.producer._ensure_producer)  # what kafka_producer() calls


def test_a_rocksdb_stores_databases_by_partition_exist_in_the_installed_faust(tmp_path):
    app = faust.App("private-api-rocksdb", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=2)
    assert faust_fixes.rocksdb_databases(table.data) == {}  # none opened yet
    table.data._db_for_partition(1)
    assert list(faust_fixes.rocksdb_databases(table.data)) == [1]


def test_the_fixes_refuse_a_faust_they_were_not_written_for():
    faust_fixes.check_faust_version(faust.__version__)  # the pinned one
    with pytest.raises(RuntimeError, match="faust-streaming 0.16.0 is installed"):
        faust_fixes.check_faust_version("0.16.0")
