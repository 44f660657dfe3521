"""An hpo stage's choice after its search: the proposal with the lowest objective (the earlier on ties), as a
concrete optimizer config that evaluate stages run (``{tuned: STAGE}``)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.jsonio import write_json
from harness.stages.hpo.names import CHOSEN_FILE, CONFIG, INDEX, OBJECTIVE, PARAMS, RULE_FILE
from harness.stages.outputs import STATUS_STOPPED, StageOutcome, tag


def proposals(outcome: StageOutcome) -> list[tuple[int, float, dict[str, Any], dict[str, Any]]]:
    """``(index, objective, params, config)`` of every finished proposal of ``outcome``, by index (a
    proposal early stopping ended is not finished: it is never chosen)."""
    out = []
    for t in outcome.trials:
        if t.tags.get(tag("status")) == STATUS_STOPPED or OBJECTIVE not in t.metrics:
            continue
        raw, cfg = t.tags.get(tag(PARAMS)), t.tags.get(tag(CONFIG))
        if raw is None or cfg is None:
            continue
        out.append(
            (int(t.metrics.get(INDEX, -1)), float(t.metrics[OBJECTIVE]), json.loads(raw), json.loads(cfg))
        )
    return sorted(out, key=lambda p: p[0])


def select(spec: Any, outcome: StageOutcome, outdir: Path, log: Callable[[str], None]) -> None:
    """Write ``optimizer.json`` (the chosen config, its objective, the search's budget) to ``outdir``, copy a
    rule's equation beside it, and set ``outcome.extra["chosen"]`` (the config) and ``["metrics"]``."""
    from harness.stages.meta_tune.common import DIVERGED_PENALTY

    points = proposals(outcome)
    if not points:
        log(f"[{outcome.name}] no proposal finished: nothing chosen")
        return
    index, value, params, config = min(points, key=lambda p: (p[1], p[0]))
    if "equation" in config:
        src = Path(config["equation"])
        dst = outdir / RULE_FILE
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        config["equation"] = str(dst.resolve())
    diverged = sum(1 for _, v, _, _ in points if v >= DIVERGED_PENALTY)
    metrics = {
        "best_objective": value,
        "best_index": float(index),
        "n_trials": float(len(points)),
        "diverged_proposals": float(diverged),
        **spec.budget(len(points)),
    }
    write_json(
        outdir / CHOSEN_FILE,
        {
            "config": config,
            "params": params,
            "objective": spec.objective,
            "value": value,
            "index": index,
            "metrics": metrics,
            "proposals": [{"index": i, "value": v, "params": p} for i, v, p, _ in points],
        },
    )
    outcome.extra["chosen"] = config
    outcome.extra["metrics"] = {k: v for k, v in metrics.items() if math.isfinite(v)}
    log(f"[{outcome.name}] best of {len(points)} proposals: #{index} ({spec.objective} {value:.4g})")
