"""promtool for the tests, installed by deploy/prometheus/ensure-promtool.sh when missing."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

ENSURE = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "ensure-promtool.sh"


@functools.cache
def promtool_path() -> str:
    result = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, f"ensure-promtool.sh failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()
