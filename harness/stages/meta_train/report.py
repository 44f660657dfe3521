"""The meta_train stage's panel in ``sl2o report``: meta-loss and validation loss per teacher, with the
curriculum's steps."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from harness.plotting import auto_yscale, running_mean, save_figure
from harness.stages.outputs import HISTORY_FILE
from harness.stages.views import Panel, StageView, slug


def meta_train_panels(view: StageView, out: Path) -> list[Panel]:
    """One figure of every teacher the stage trained (read from its trial runs)."""
    runs = []
    for t in view.trials:
        rid = t.run_id
        run: dict[str, Any] = {
            "label": f"{t.tag('teacher', '?')} on {t.tag('optimizee', '?')} s{t.tag('seed', '?')}",
            "meta_loss": view.metric_history(rid, "meta_loss"),
            "val_loss": view.metric_history(rid, "val_loss"),
            "cl_steps": [],
        }
        hist_path = view.download(rid, HISTORY_FILE)
        if hist_path is not None:
            doc = json.loads(hist_path.read_text())
            run["cl_steps"] = curriculum_steps(doc)
            run["curriculum"] = bool((doc.get("config") or {}).get("curriculum"))
            hist = doc.get("history") or []
            if hist:  # the trainer's own history spans resumes (a resumed trial's MLflow run starts there)
                run["meta_loss"] = [(e["episode"], e["meta_loss"]) for e in hist if "meta_loss" in e]
                run["val_loss"] = [
                    (e["episode"], e["val_loss"]) for e in hist if e.get("val_loss") is not None
                ]
        run["meta_loss"] = sorted(run["meta_loss"])
        run["val_loss"] = sorted(run["val_loss"])
        runs.append(run)
    if not runs:
        return []
    n_cl = sum(len(r["cl_steps"]) for r in runs)
    cl = f"; green dashed lines: {n_cl} curriculum step(s)" if n_cl else "; no curriculum steps"
    return [
        Panel(
            plot_meta_train(runs, out / f"meta_train_{slug(view.name)}.png"),
            f"Meta-training ({view.name})",
            f"Per-episode meta-loss (faint) with its running mean, and the validation loss (star: the best, "
            f"whose weights are kept){cl}.",
        )
    ]


def curriculum_steps(doc: dict[str, Any]) -> list[tuple[int, str, int | None]]:
    """``(episode, event, unroll length after it)`` where a meta-training ``history.json`` advanced its
    curriculum (``cl_event`` ``advance``, and the first ``done``), else where ``cl_stage`` changed."""
    hist = doc.get("history") or []
    if not (doc.get("config") or {}).get("curriculum", any(e.get("cl_event") for e in hist)):
        return []
    lengths = (doc.get("config") or {}).get("cl_lengths") or []
    steps: list[tuple[int, str, int | None]] = []
    prev = hist[0].get("cl_stage", 0) if hist else 0
    done = False
    for i, e in enumerate(hist):
        event = e.get("cl_event") or ""
        stage = e.get("cl_stage", prev)
        nxt = hist[i + 1] if i + 1 < len(hist) else e
        if event == "advance" or (event == "done" and not done) or (not event and stage != prev):
            done = done or event == "done"
            length = lengths[stage] if isinstance(stage, int) and 0 <= stage < len(lengths) else None
            steps.append((int(e["episode"]), event or "stage", length or nxt.get("episode_length")))
        prev = stage
    return steps


def plot_meta_train(runs: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Meta-training of each teacher: the per-episode meta-loss (raw, faint, and a running mean) and the
    validation loss, with curriculum steps as vertical lines.

    Each run is ``{"label", "meta_loss": [(episode, v)], "val_loss": [(episode, v)], "cl_steps":
    [(episode, event, unroll length)]}``."""
    n = max(1, len(runs))
    fig = Figure(figsize=(11, 3.8 * n))
    for i, run in enumerate(runs):
        ax_m = fig.add_subplot(n, 2, 2 * i + 1)
        ax_v = fig.add_subplot(n, 2, 2 * i + 2)
        ml = np.array(run.get("meta_loss") or [], dtype=np.float64).reshape(-1, 2)
        vl = np.array(run.get("val_loss") or [], dtype=np.float64).reshape(-1, 2)
        if ml.size:
            k = max(1, ml.shape[0] // 50)
            faint: dict[str, Any] = (
                {"alpha": 0.25, "linewidth": 0.6} if k > 1 else {"marker": "o", "markersize": 3}
            )
            ax_m.plot(ml[:, 0], ml[:, 1], color="tab:blue", label="per episode", **faint)
            if k > 1:
                ax_m.plot(ml[:, 0], running_mean(ml[:, 1], k), color="tab:blue", label=f"running mean ({k})")
            auto_yscale(ax_m, ml[:, 1])
        if vl.size:
            ax_v.plot(vl[:, 0], vl[:, 1], "o-", color="tab:orange", markersize=3, label="validation loss")
            best = int(np.nanargmin(vl[:, 1]))
            ax_v.plot(vl[best, 0], vl[best, 1], "*", color="k", markersize=10, label="best (kept)")
            auto_yscale(ax_v, vl[:, 1])
        for ax in (ax_m, ax_v):
            for j, (ep, event, length) in enumerate(run.get("cl_steps") or []):
                ax.axvline(
                    ep,
                    color="tab:green",
                    linestyle="--",
                    linewidth=1,
                    label="curriculum step" if j == 0 else None,
                )
                if ax is ax_v and length:
                    ax.annotate(
                        f"{event}: T={length}",
                        (ep, 1.0),
                        xycoords=("data", "axes fraction"),
                        rotation=90,
                        va="top",
                        ha="right",
                        fontsize=7,
                        color="tab:green",
                    )
            ax.set_xlabel("episode")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        ax_m.set_ylabel("meta-loss (training unrolls)")
        ax_v.set_ylabel("validation loss")
        cl = run.get("curriculum")
        if cl and not run.get("cl_steps"):
            cl_note = " (curriculum on, never advanced)"
        else:
            cl_note = f" ({len(run.get('cl_steps') or [])} curriculum step(s))" if cl else ""
        ax_m.set_title(f"{run.get('label', '')}: meta-loss{cl_note}", fontsize=10)
        ax_v.set_title(f"{run.get('label', '')}: validation", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
