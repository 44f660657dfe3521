"""Smoke run of ``benchmarks/perf/optimizer_step.py`` (tiny budget): the JSON rows' structure, not performance."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_optimizer_step_json_rows() -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "perf" / "optimizer_step.py"), "--models", "mlp_p3"]
    cmd += [
        "--reps",
        "1",
        "--warmup",
        "0",
        "--inner",
        "2",
        "--threads",
        "1",
        "--no-train",
        "--no-compile",
        "--json",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["rule"] for r in rows] == ["adam_equation", "eq6_L2", "eq6_L20"]
    for r in rows:
        assert r["model"] == "mlp_p3" and r["compile"] is False and r["train_wall_ratio"] is None
        assert math.isfinite(r["step_ratio_vs_adam"]) and r["step_ratio_vs_adam"] > 0
    assert [r["state_bytes_per_param"] for r in rows] == [8.0, 16.0, 160.0]
