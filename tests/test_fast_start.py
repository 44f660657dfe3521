"""``sl2o validate``, ``list``, ``equation show`` and ``--help`` start without importing torch, Ray, MLflow or
matplotlib: facades load lazily (``lazy_loader`` stubs), plug-ins register by name with their kwargs models
(their docstrings read from source), stage kinds import their work modules inside the hooks that run them,
and equations import torch only to compile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "mlflow", "matplotlib", "optuna", "pyoperon", "pandas", "sklearn")

_PROBE = """
import json, sys
from harness.cli import main
sys.argv = ["sl2o", *{args!r}]
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({{"code": code, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _run(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=list(args), heavy=HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [
        ("validate", "benchmarks/suites/quickstart.yaml"),
        ("validate", "benchmarks/suites/table4-cpu.yaml"),
        ("--help",),
        ("validate", "--help"),
        ("list", "optimizees"),
        ("list", "teachers"),
        ("list", "stages"),
        ("equation", "show", "{equation}"),
    ],
)
def test_light_commands_import_no_heavy_library(args: tuple[str, ...], tmp_path: Path) -> None:
    equation = tmp_path / "eq.json"
    equation.write_text(json.dumps({"expression": "0.5*tanh(m_hat_0) - sqrt(2)*0.01*g_0"}))
    out = _run(*(a.format(equation=equation) for a in args))
    assert out["code"] in (0, None), out
    assert out["heavy"] == [], f"sl2o {' '.join(args)} imported {out['heavy']}"


def test_a_bad_suite_is_still_refused_without_torch(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nstages:\n  - name: t\n    kind: meta_train\n    teachers: [{name: rp, kwargs: {hidden: 100000000}}]\n"
        "    optimizees: [{name: mlp, kwargs: {hidden: [1000000000]}}]\n"
    )
    out = _run("validate", str(bad))
    assert out["code"] == 2 and out["heavy"] == [], out
