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
        "--compiled-steps",
        "4",
        "--compiled-step-backend",
        "aot_eager",
        "--json",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    all_rows = json.loads(proc.stdout.strip().splitlines()[-1])
    compiled = [r for r in all_rows if r.get("compiled_training_step")]
    rows = [r for r in all_rows if not r.get("compiled_training_step")]
    # the compiled training step (aot_eager here: the structure, not inductor's speed): every rule compiles
    # as often as torch's Adam and never again over the steps
    assert [r["rule"] for r in compiled] == ["adam", "adam_equation", "eq6_L2", "eq6_L20"]
    adam = compiled[0]
    for r in compiled:
        assert r["compiles"] == adam["compiles"] >= 1 and r["recompiles"] == 0 and r["steps"] == 4
        assert math.isfinite(r["step_ratio_vs_compiled_adam"]) and r["step_ratio_vs_compiled_adam"] > 0
    assert [r["rule"] for r in rows] == ["adam_equation", "eq6_L2", "eq6_L20"]
    for r in rows:
        assert r["model"] == "mlp_p3" and r["compile"] is False and r["train_wall_ratio"] is None
        assert math.isfinite(r["step_ratio_vs_adam"]) and r["step_ratio_vs_adam"] > 0
    assert [r["state_bytes_per_param"] for r in rows] == [8.0, 16.0, 160.0]
