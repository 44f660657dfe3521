"""Smoke runs of the teacher benchmark scripts (tiny budgets): output structure, not performance."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PERF = ROOT / "benchmarks" / "perf"
if str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))
_mod = sys.modules.get("teachers")
if _mod is not None and getattr(_mod, "__file__", None) is None:  # namespace package from tests/
    del sys.modules["teachers"]

FAST_SEEDS = {"test_seeds": (2_000_000, 2_000_001), "val_seeds": (1_000_000,), "adam_lrs": (1e-3, 1e-2)}


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    if str(PERF) not in sys.path:
        sys.path.insert(0, str(PERF))
    spec = importlib.util.spec_from_file_location(name, PERF / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _finite(*xs: float) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def test_teacher_vs_adam_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    tva = _load("teacher_vs_adam")
    out = tva.main(["--budget-s", "1.5", "--horizon", "4", "--json", "--eval-every", "2"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert list(summary) == ["teacher_loss", "adam_best_loss", "horizon", "seconds"]
    assert summary["horizon"] == 4 and isinstance(summary["horizon"], int)
    assert _finite(summary["teacher_loss"], summary["adam_best_loss"], summary["seconds"])
    assert summary["adam_best_loss"] == min(out["details"]["adam_means"].values())
    assert out["details"]["episodes"] >= 1


def test_teacher_vs_adam_run_rp_extra_no_test_seed_in_training() -> None:
    tva = _load("teacher_vs_adam")
    settings = tva.TeacherSettings("rp_extra", {"out_scale": 0.1}, episode_length=6, eval_every=1)
    out = tva.run(settings, horizon=3, budget_s=1.0, log=lambda s: None, **FAST_SEEDS)
    assert _finite(out["teacher_loss"], out["adam_best_loss"])
    assert len(out["details"]["teacher_per_seed"]) == 2


def test_table3_rows() -> None:
    t3 = _load("table3")
    assert set(t3.teacher_settings(200)) == {"DM", "DM+CL+IL", "RP", "RP+CL+IL", "RP(small)", "RP(extra)"}
    out = t3.run(horizon=3, budget_s=0.7, names=["DM+CL+IL", "RP(small)"], log=lambda s: None, **FAST_SEEDS)
    assert set(out["adam"]) == {"P2", "P3"}
    assert [r["teacher"] for r in out["teachers"]] == ["DM+CL+IL", "RP(small)"]
    for r in out["teachers"]:
        assert _finite(r["in_dist_loss"], r["ood_loss"], r["meta_train_s"]) and r["episodes"] >= 1
    json.dumps(out)  # the --json line is serialisable


def test_teacher_memory_in_process_and_subprocess() -> None:
    mem = _load("teacher_memory")
    row = mem.measure("dm-unroll", "digits", (6,), steps=3)
    assert row["state_bytes_per_param"] == pytest.approx(320.0)  # 2 layers x (h, c) x 20 x 4 bytes
    assert _finite(row["peak_mb"], row["peak_bytes_per_param"])
    rows = mem.run(
        "digits", {"tiny": (8,)}, ("adam", "rp-apply"), threads=1, timeout_s=120, log=lambda s: None
    )
    assert [r["mode"] for r in rows] == ["adam", "rp-apply"]
    adam, rp = rows
    assert "skipped" not in adam and "skipped" not in rp, rows
    assert 8.0 <= adam["state_bytes_per_param"] < 9.0  # exp_avg + exp_avg_sq (+ step scalars)
    assert rp["state_bytes_per_param"] == pytest.approx(328.0)  # m, v + 2 x (h, c) x 20 floats
    assert "ratio_vs_adam" in adam and "ratio_vs_adam" in rp
    json.dumps(rows)
