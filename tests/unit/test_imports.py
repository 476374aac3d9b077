"""The product's modules import alone, in any order, without side effects; the import layers hold.

Each module is imported first in a fresh interpreter, so an import circle shows
whichever module of it comes first. Importing the entry module must patch
nothing, read no file and open no connection: that all happens when a worker
starts (`app.main.start_worker`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "agents", "tables", "web")
# Nothing listens there: an import that connected would hang or fail.
OFFLINE = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
           "API_KEYS_FILE": "/nonexistent/api-keys", "PYTHONDONTWRITEBYTECODE": "1"}


def product_modules() -> list[str]:
    modules = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, **OFFLINE},
                          capture_output=True, text=True, timeout=120)


def test_the_module_list_covers_the_product():
    modules = product_modules()
    assert {"app.main", "app.faust_app", "app.bootstrap", "tables.timestamps_by_id", "web.health"} <= set(modules)


def test_every_product_module_imports_alone_in_a_fresh_interpreter():
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(product_modules(), pool.map(lambda m: python(f"import {m}"), product_modules())))
    failed = {module: r.stderr.strip().splitlines()[-1] for module, r in results.items() if r.returncode != 0}
    assert failed == {}


def test_importing_the_entry_patches_nothing_and_reads_no_key_file():
    checked = python(
        "import aiohttp.web, aiokafka.consumer.fetcher as fetcher, faust.transport.consumer as consumer\n"
        "before = (aiohttp.web.RequestHandler.handle_error, aiohttp.web.RequestHandler.data_received,\n"
        "          consumer.Consumer.ack, consumer.Consumer._new_offset, fetcher.MemoryRecords)\n"
        "import app.main\n"
        "after = (aiohttp.web.RequestHandler.handle_error, aiohttp.web.RequestHandler.data_received,\n"
        "         consumer.Consumer.ack, consumer.Consumer._new_offset, fetcher.MemoryRecords)\n"
        "assert before == after, 'patched at import'\n"
        "from web.auth import api_keys\n"
        "assert api_keys.keys == ()\n"
        "print('clean')\n"
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert checked.stdout.strip() == "clean"


@pytest.fixture(scope="module")
def lint_imports() -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("contract", ["The domain is pure", "Nothing imports the entry module",
                                      "The app definition imports no agent", "Adapters, fences and the write path"])
def test_the_import_layers_hold(contract, lint_imports):
    linted = lint_imports
    line = next((line for line in linted.stdout.splitlines() if line.startswith(contract)), "")
    assert line.endswith("KEPT"), linted.stdout[-3000:]
    assert linted.returncode == 0
