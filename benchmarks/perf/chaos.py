"""Exactly-once under crashes: run ``baselines-smoke`` split into two independent stages (one per seed, so
both run at once as a graph), SIGKILL the driver at several points while both stages run, rerun after each
kill, and count what the store holds; then a SIGTERM round: a driver that started its own Ray is
stopped with SIGTERM mid-stage, must exit 130 (the Ctrl-C path) with its Tune state signed, and the rerun
finishes with every trial recorded once; then a concurrent round: two drivers launched at once on one
workdir, where the second must wait for the first and reuse its stage (no trial trained twice).

Each kill lands when the store has recorded a growing number of finished trials (spread over the run) and a
stage has recorded some but not all of its trials: both stages start at once, so this is nearly always while
both run (each kill's log line says whether both were mid-way), with Tune's saved state behind their trial
completions. The last rerun goes to the end. Then it counts, among the evaluate-trial runs MLflow keeps, the distinct trial
identities (``sl2o.trial_key``), the duplicates (finished runs beyond one per identity) and the missing
trials, and checks the leaderboard rows count every seed once.

With ``--json`` the last line is ``{"kills", "trials_expected", "trials_unique", "duplicates", "missing",
"leaderboard_rows_ok", "seconds", "sigterm_exit", "sigterm_state_signed", "sigterm_duplicates",
"sigterm_missing", "concurrent_exits", "work_done", "work_duplicated"}``. Drivers connect to one local Ray instance that this script starts
(``--address`` uses yours); the MLflow store and workdir are in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "suites" / "baselines-smoke.yaml"


def _finished(uri: str, suite: str, latest_only: bool = False) -> list[Any]:
    """FINISHED evaluate-trial runs of the suite (with ``latest_only``: of its latest run's stage keys,
    what the leaderboard reads; a stage key changes when the code or an input file does)."""
    from harness import tracking
    from harness.stages.outputs import TAG

    client = tracking.init_tracking(uri)
    exp = client.get_experiment_by_name(suite)
    if exp is None:
        return []
    runs = tracking.find_runs(
        client,
        [exp.experiment_id],
        f"tags.`{TAG}.kind` = 'trial' and tags.`{TAG}.stage_kind` = 'evaluate' and attributes.status = 'FINISHED'",
    )
    if latest_only:
        latest = tracking.latest_suite_run(client, exp.experiment_id)
        keys = set((latest.data.tags.get(f"{TAG}.stage_keys", "") if latest else "").split(","))
        runs = [r for r in runs if r.data.tags.get(f"{TAG}.stage_key") in keys]
    return runs


def _run_command(
    workdir: Path, address: str | None, suite_file: Path = SUITE
) -> tuple[Any, dict[str, int], str, list[str]]:
    """The suite (evaluate stages that read no other stage), its number of trials per stage, its store's URI
    and the ``sl2o run`` command (on ``address`` when given, else the driver's own Ray)."""
    from harness.config.suite import load_suite
    from harness.registry import STAGES

    suite = load_suite(suite_file)
    expected = {s.name: len(STAGES.get(s.kind).plan(suite, s, {})) for s in suite.stages}
    uri = f"sqlite:///{workdir}/mlflow.db"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite_file), "--tracking-uri", uri]
    cmd += ["--workdir", str(workdir), "--no-leaderboard"] + (["--address", address] if address else [])
    return suite, expected, uri, cmd


def split_by_seed(src: Path, dest: Path) -> Path:
    """``src`` (one evaluate stage) as one stage per seed, written to ``dest``: independent stages of equal
    work, which a run as a graph runs at once."""
    data = yaml.safe_load(src.read_text())
    (stage,) = data["stages"]
    data["name"] = f"{data['name']}-split"
    data["stages"] = [
        {**stage, "name": f"{stage['name']}-s{seed}", "seeds": [seed]} for seed in stage["seeds"]
    ]
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def run_chaos(kills: int, address: str, workdir: Path, log: Any = print) -> dict[str, Any]:
    """SIGKILL ``sl2o run`` ``kills`` times while two stages run, rerun to the end, and count the records."""
    from harness import tracking
    from harness.report import leaderboard as report
    from harness.stages.outputs import TAG

    suite_file = split_by_seed(SUITE, workdir / "chaos-suite.yaml")
    suite, per_stage, uri, cmd = _run_command(workdir, address, suite_file)
    expected = sum(per_stage.values())
    start = time.time()
    done_kills = 0
    for k in range(kills + 1):
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        target = (k + 1) * expected // (kills + 2)  # kill once this many trials are recorded
        while k < kills and proc.poll() is None:
            time.sleep(0.1)
            try:
                runs = _finished(uri, suite.name)
            except Exception:  # noqa: BLE001 - the store may be busy or not created yet
                continue
            done = Counter(r.data.tags.get(f"{TAG}.stage") for r in runs)
            # mid-way through a stage, once the target is reached: both stages run at once from the start, so
            # this is nearly always while both run (the log says); a stage that the other left no CPU until it
            # finished cannot cost the round its kill
            if len(runs) >= target and any(0 < done[s] < n for s, n in per_stage.items()):
                proc.send_signal(signal.SIGKILL)
                done_kills += 1
                both = all(0 < done[s] < n for s, n in per_stage.items())
                log(
                    f"kill {done_kills}: SIGKILL at {len(runs)} recorded trials ({dict(done)}), "
                    + ("both stages running" if both else "one stage mid-way")
                )
                break
        out, _ = proc.communicate(timeout=600)
        if k == kills and proc.returncode != 0:
            raise RuntimeError(f"the final rerun failed ({proc.returncode}):\n{out[-3000:]}")
    runs = _finished(uri, suite.name, latest_only=True)
    keys = Counter(r.data.tags.get(f"{TAG}.trial_key") for r in runs)
    rows = report.aggregate(tracking.leaderboard_records(tracking.init_tracking(uri), suite.name))
    n_seeds = len(suite.stages)  # one seed per stage
    seeds_ok = all(r["n"] == n_seeds and len(set(r["seeds"])) == r["n"] for r in rows)  # type: ignore[attr-defined]
    return {
        "kills": done_kills,
        "trials_expected": expected,
        "trials_unique": len(keys),
        "duplicates": sum(n - 1 for n in keys.values()),
        "missing": expected - len(keys),
        "leaderboard_rows_ok": bool(rows) and seeds_ok,
        "seconds": round(time.time() - start, 1),
    }


def run_sigterm(
    workdir: Path, log: Any = print, suite_file: Path = SUITE, rerun_address: str | None = None
) -> dict[str, Any]:
    """SIGTERM ``sl2o run`` of ``suite_file`` (one evaluate stage; its own local Ray: Ray's handler is
    installed there) once a third of the trials are recorded; then rerun to the end (on ``rerun_address``
    when given, else its own Ray again) and count the records."""
    from harness import tracking
    from harness.engine import trust
    from harness.stages.outputs import TAG

    suite, per_stage, uri, cmd = _run_command(workdir, None, suite_file)
    expected = sum(per_stage.values())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while proc.poll() is None:
        time.sleep(0.2)
        try:
            if len(_finished(uri, suite.name)) >= expected // 3:
                proc.send_signal(signal.SIGTERM)
                log(f"SIGTERM at >= {expected // 3} recorded trials")
                break
        except Exception:  # noqa: BLE001 - the store may be busy or not created yet
            continue
    out, _ = proc.communicate(timeout=600)
    code = proc.returncode
    client = tracking.init_tracking(uri)
    exp = client.get_experiment_by_name(suite.name)
    stage_runs = (
        tracking.find_runs(client, [exp.experiment_id], f"tags.`{TAG}.kind` = 'stage'") if exp else []
    )
    signed = any(trust.is_signed(r.data.tags.get(f"{TAG}.tune_state_digest")) for r in stage_runs)
    again = [*cmd, "--address", rerun_address] if rerun_address else cmd
    rerun = subprocess.run(again, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    if rerun.returncode != 0:
        raise RuntimeError(f"the rerun after SIGTERM failed ({rerun.returncode}):\n{rerun.stdout[-3000:]}")
    keys = Counter(r.data.tags.get(f"{TAG}.trial_key") for r in _finished(uri, suite.name, latest_only=True))
    return {
        "sigterm_exit": code,
        "sigterm_state_signed": signed,
        "sigterm_duplicates": sum(n - 1 for n in keys.values()),
        "sigterm_missing": expected - len(keys),
        "sigterm_output_tail": out[-400:] if code != 130 else "",
    }


def run_concurrent(address: str, workdir: Path, log: Any = print) -> dict[str, Any]:
    """Launch two ``sl2o run``s of the suite at once on one workdir and store; count the trials each trained
    (its progress lines) against the suite's trials."""
    import re

    _, per_stage, _, cmd = _run_command(workdir, address)
    expected = sum(per_stage.values())
    procs = [
        subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    trained = [max((int(m) for m in re.findall(r"\] (\d+)/\d+ trials done", out)), default=0) for out in outs]
    log(f"concurrent drivers trained {trained} trials (suite: {expected})")
    return {
        "concurrent_exits": [p.returncode for p in procs],
        "work_done": sum(trained),
        "work_duplicated": sum(trained) - expected,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--address", default=None, help="a running Ray cluster (default: start a local one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    import ray

    from harness.engine.runner import init_ray

    address = args.address
    if address is None:
        init_ray(None)
        address = ray.get_runtime_context().gcs_address
    with tempfile.TemporaryDirectory(prefix="sl2o-chaos-") as tmp:
        res = run_chaos(args.kills, address, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="sl2o-concurrent-") as tmp:
        res.update(run_concurrent(address, Path(tmp)))
    if args.address is None:
        ray.shutdown()
    with tempfile.TemporaryDirectory(prefix="sl2o-sigterm-") as tmp:
        res.update(run_sigterm(Path(tmp)))
    for k, v in res.items():
        print(f"{k:22s} {v}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
