"""benchmarks/perf/early_stopping.py --quick: the figures it prints per horizon (structure, not speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_quick_run_prints_the_figures_per_horizon() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "perf" / "early_stopping.py"), "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(result) == ["30 steps", "60 steps"]
    for r in result.values():
        assert {"budget_saved_fraction", "seconds_full", "seconds_asha", "best_full", "best_asha", "same_best"} <= set(r)
        assert 0 <= r["budget_saved_fraction"] < 1 and r["seconds_full"] > 0 and r["seconds_asha"] > 0
        assert r["best_full"] and r["best_asha"] and r["same_best"] == (r["best_full"] == r["best_asha"])
    assert any(r["budget_saved_fraction"] > 0 for r in result.values())  # ASHA stopped something
