"""Ray Tune trainables and trial grids for each stage kind (the thin layer over ``harness.stages``).

Each planner turns a validated stage config into a ``StagePlan``: a trainable that calls the pure
stage function, and a ``tune.grid_search`` param space crossing the stage's axes.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from ray import tune

from harness.config import (
    CollectStage,
    DistillStage,
    EvaluateStage,
    GridRef,
    MetaTrainStage,
    MetaTuneStage,
    Suite,
)
from harness.optimizers import optimizer_label
from harness.runner import FINALIZERS, StageOutcome, StagePlan, planner, set_trial_threads
from harness.tracking import TAG
from search_spaces import load_grid

#: how often (seconds) a running trial streams its new curve points to the tracker
CURVE_FLUSH_S = 5.0


def _tags_json(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def _params_of(keys: tuple[str, ...]) -> Any:
    """A ``trial_params`` function: the trial config's ``keys``, flattened to MLflow params."""
    from harness.tracking import flatten

    def trial_params(cfg: dict[str, Any]) -> dict[str, str]:
        return flatten({k: cfg[k] for k in keys})

    return trial_params


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------
def resolve_optimizers(stage: EvaluateStage, inputs: dict[str, StageOutcome]) -> list[dict[str, Any]]:
    """Expand grid references and earlier stages' outputs into concrete optimizer configs."""
    out: list[dict[str, Any]] = []
    for entry in stage.optimizers:
        if isinstance(entry, GridRef):
            out.extend(load_grid(entry.grid, entry.file))
            continue
        spec = entry.model_dump(exclude_none=True, exclude_defaults=True)
        spec["family"] = entry.family
        src = spec.pop("from_stage", None)
        if src is None:
            out.append(spec)
            continue
        outcome = inputs[src]
        out.extend(_from_stage(spec, outcome))
    # drop exact duplicates while keeping order
    seen, uniq = set(), []
    for o in out:
        k = json.dumps(o, sort_keys=True)
        if k not in seen:
            seen.add(k)
            uniq.append(o)
    return uniq


def _from_stage(spec: dict[str, Any], outcome: StageOutcome) -> list[dict[str, Any]]:
    """Optimizer configs built from an earlier stage's artifacts (teachers or equations)."""
    from harness.stage_outputs import optimizers_from_stage

    return optimizers_from_stage(spec, outcome)


def evaluate_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: one ``harness.stages.evaluate.evaluate`` run, curve streamed in batches."""
    from harness.stages.evaluate import evaluate

    set_trial_threads()
    pending_steps: list[int] = []
    pending_loss: list[float] = []
    last = [time.time()]

    def on_log(step: int, loss: float) -> None:
        pending_steps.append(step)
        pending_loss.append(loss)
        if time.time() - last[0] > CURVE_FLUSH_S:
            tune.report(
                {"curve_steps": list(pending_steps), "curve_train_loss": list(pending_loss), "step": step}
            )
            pending_steps.clear()
            pending_loss.clear()
            last[0] = time.time()

    result = evaluate(
        config["optimizee"],
        config["optimizer"],
        int(config["seed"]),
        device=config.get("device", "cpu"),
        log_every=int(config.get("log_every", 10)),
        on_log=on_log,
    )
    metrics = result.metrics()
    final = {
        **metrics,
        "final": True,
        "final_keys": list(metrics),
        "status": result.status,
        "curve_steps": list(pending_steps),
        "curve_train_loss": list(pending_loss),
    }
    if result.diverged_at is not None:
        final["diverged_at"] = result.diverged_at
    tune.report(final)


def _optimizee_dict(o: Any) -> dict[str, Any]:
    return o.model_dump(exclude_none=True)


@planner("evaluate")
def plan_evaluate(suite: Suite, stage: EvaluateStage, inputs: dict[str, StageOutcome]) -> StagePlan:
    optimizers = resolve_optimizers(stage, inputs)
    optimizees = [_optimizee_dict(o) for o in stage.optimizees]
    labels = {
        json.dumps(o, sort_keys=True): spec.display()
        for o, spec in zip(optimizees, stage.optimizees, strict=True)
    }

    def trial_tags(cfg: dict[str, Any]) -> dict[str, str]:
        opt = cfg["optimizer"]
        return {
            f"{TAG}.optimizee": labels.get(
                json.dumps(cfg["optimizee"], sort_keys=True), cfg["optimizee"]["name"]
            ),
            f"{TAG}.optimizer": optimizer_label(opt),
            f"{TAG}.optimizer_family": str(opt.get("family")),
            f"{TAG}.seed": str(cfg["seed"]),
            f"{TAG}.config": _tags_json({k: cfg[k] for k in ("optimizee", "optimizer", "seed")}),
        }

    trial_params = _params_of(("optimizee", "optimizer", "seed"))

    space = {
        "optimizee": tune.grid_search(optimizees),
        "optimizer": tune.grid_search(optimizers),
        "seed": tune.grid_search(list(stage.seeds)),
        "log_every": stage.log_every,
        "device": stage.device,
    }
    return StagePlan(
        trainable=evaluate_trainable,
        param_space=space,
        n_trials=len(optimizees) * len(optimizers) * len(stage.seeds),
        metric=suite.metric.name,
        mode=suite.metric.mode,
        trial_tags=trial_tags,
        trial_params=trial_params,
    )


# ---------------------------------------------------------------------------------------------
# meta_train
# ---------------------------------------------------------------------------------------------
TRAINER_FILE = "trainer.pt"


def meta_train_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: one meta-training run, checkpointed through Tune so a killed trial resumes."""
    import tempfile
    from pathlib import Path

    import torch
    from ray.tune import Checkpoint

    from harness.runner import report_artifacts
    from harness.stages.meta_train import make_config, run_meta_train, write_outputs

    set_trial_threads()
    settings = {**config["settings"], **config["teacher"].get("settings", {})}
    cfg = make_config(config["teacher"], config["optimizee"], int(config["seed"]), settings)
    resume = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            path = Path(d) / TRAINER_FILE
            if path.exists():
                resume = torch.load(path, map_location="cpu", weights_only=True)
    every = int(config.get("checkpoint_every", 5))
    pending: dict[str, list[float]] = {"steps": [], "meta_loss": [], "val_loss": []}
    last = [time.time()]

    def on_episode(trainer: Any, m: dict[str, Any]) -> None:
        ep = int(m["episode"])
        pending["steps"].append(ep)
        pending["meta_loss"].append(float(m.get("meta_loss", float("nan"))))
        pending["val_loss"].append(float(m.get("val_loss", float("nan"))))
        if ep % every == 0 or time.time() - last[0] > CURVE_FLUSH_S:
            result = {
                "curve_steps": list(pending["steps"]),
                "curve_meta_loss": list(pending["meta_loss"]),
                "curve_val_loss": list(pending["val_loss"]),
                "episode": ep,
                "best_val_loss": float(m.get("best_val_loss", float("inf"))),
            }
            for v in pending.values():
                v.clear()
            last[0] = time.time()
            if ep % every == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    torch.save(trainer.state_dict(), Path(tmp) / TRAINER_FILE)
                    tune.report(result, checkpoint=Checkpoint.from_directory(tmp))
            else:
                tune.report(result)

    result = run_meta_train(cfg, resume=resume, on_episode=on_episode)
    with tempfile.TemporaryDirectory() as out:
        files = write_outputs(result, cfg, out)
        metrics = {
            "best_val_loss": result.best_val_loss,
            "episodes": float(result.episodes),
            "meta_iterations": float(result.meta_iterations),
            "elapsed_s": result.elapsed_s,
        }
        final = {
            **metrics,
            "final": True,
            "final_keys": list(metrics),
            "status": "ok" if math.isfinite(result.best_val_loss) else "diverged",
            "stop_reason": result.stop_reason,
            "curve_steps": list(pending["steps"]),
            "curve_meta_loss": list(pending["meta_loss"]),
            "curve_val_loss": list(pending["val_loss"]),
        }
        report_artifacts(final, files)


@planner("meta_train")
def plan_meta_train(suite: Suite, stage: MetaTrainStage, inputs: dict[str, StageOutcome]) -> StagePlan:
    teachers = [t.model_dump() for t in stage.teachers]
    optimizees = [_optimizee_dict(o) for o in stage.optimizees]
    labels = {
        json.dumps(o, sort_keys=True): spec.display()
        for o, spec in zip(optimizees, stage.optimizees, strict=True)
    }

    def trial_tags(cfg: dict[str, Any]) -> dict[str, str]:
        return {
            f"{TAG}.teacher": cfg["teacher"].get("label") or cfg["teacher"]["name"],
            f"{TAG}.optimizee": labels.get(
                json.dumps(cfg["optimizee"], sort_keys=True), cfg["optimizee"]["name"]
            ),
            f"{TAG}.seed": str(cfg["seed"]),
            f"{TAG}.config": _tags_json({k: cfg[k] for k in ("teacher", "optimizee", "seed", "settings")}),
        }

    trial_params = _params_of(("teacher", "optimizee", "seed", "settings"))

    space = {
        "teacher": tune.grid_search(teachers),
        "optimizee": tune.grid_search(optimizees),
        "seed": tune.grid_search(list(stage.seeds)),
        "settings": dict(stage.settings),
        "checkpoint_every": stage.checkpoint_every,
    }
    return StagePlan(
        trainable=meta_train_trainable,
        param_space=space,
        n_trials=len(teachers) * len(optimizees) * len(stage.seeds),
        metric="best_val_loss",
        mode="min",
        trial_tags=trial_tags,
        trial_params=trial_params,
    )


# ---------------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------------
def collect_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: record one source's (feature history, update) dataset."""
    import tempfile
    from pathlib import Path

    from harness.runner import report_artifacts
    from harness.stages.collect import collect

    set_trial_threads()
    start = time.time()
    ds = collect(
        config["source"],
        config["optimizees"],
        features=config.get("features"),
        lags=int(config["lags"]),
        n_samples=int(config["n_samples"]),
        holdout=float(config["holdout"]),
        steps=int(config["steps"]),
        seed=int(config["seed"]),
        variables=config.get("variables"),
        seeds_per_optimizee=int(config.get("seeds_per_optimizee", 2)),
    )
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "dataset.npz"
        ds.save(path)
        metrics = {
            "n_train": float(len(ds.y_train)),
            "n_val": float(len(ds.y_val)),
            "n_inputs": float(ds.X_train.shape[1]),
            "seconds": time.time() - start,
        }
        report_artifacts(
            {**metrics, "final": True, "final_keys": list(metrics), "status": "ok"}, {"dataset.npz": path}
        )


@planner("collect")
def plan_collect(suite: Suite, stage: CollectStage, inputs: dict[str, StageOutcome]) -> StagePlan:
    from harness.stage_outputs import teachers_from_stage

    src = stage.source
    if src.from_stage:
        sources = [
            {"checkpoint": str(p), "label": label} for label, p in teachers_from_stage(inputs[src.from_stage])
        ]
    elif src.checkpoint:
        sources = [{"checkpoint": src.checkpoint, "label": src.checkpoint.rsplit("/", 1)[-1]}]
    else:
        sources = [{"rule": src.rule, "kwargs": dict(src.kwargs), "label": src.rule}]

    def trial_tags(cfg: dict[str, Any]) -> dict[str, str]:
        return {
            f"{TAG}.source": str(cfg["source"].get("label")),
            f"{TAG}.config": _tags_json({"source": cfg["source"], "seed": cfg["seed"]}),
        }

    trial_params = _params_of(("source", "optimizees", "features", "lags", "n_samples", "steps", "seed"))

    space = {
        "source": tune.grid_search(sources),
        "optimizees": [_optimizee_dict(o) for o in stage.optimizees],
        "features": stage.features,
        "lags": stage.lags,
        "n_samples": stage.n_samples,
        "holdout": stage.holdout,
        "steps": stage.steps,
        "seed": stage.seed,
        "variables": stage.variables,
        "seeds_per_optimizee": stage.seeds_per_optimizee,
    }
    return StagePlan(collect_trainable, space, len(sources), "n_train", "max", trial_tags, trial_params)


# ---------------------------------------------------------------------------------------------
# distill
# ---------------------------------------------------------------------------------------------
def distill_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: one SR fit (backend x seed x max complexity) on one dataset; logs its front."""
    import tempfile

    from harness.runner import report_artifacts
    from harness.stages.collect import SRDataset
    from harness.stages.distill import distill, write_outputs

    cpus = set_trial_threads()
    start = time.time()
    ds = SRDataset.load(config["dataset"])
    settings = dict(config["settings"])
    settings.setdefault("max_complexity", int(config["max_complexity"]))
    settings.setdefault("threads", cpus)
    front = distill(ds, config["backend"], settings, int(config["seed"]))
    with tempfile.TemporaryDirectory() as out:
        files = write_outputs(front, out, ds, how=config.get("choose", "mc"))
        best = max((eq.metrics.get("r2_val", float("-inf")) for eq in front.equations), default=float("nan"))
        metrics = {
            "best_r2_val": float(best),
            "front_size": float(len(front.equations)),
            "seconds": time.time() - start,
        }
        report_artifacts({**metrics, "final": True, "final_keys": list(metrics), "status": "ok"}, files)


@planner("distill")
def plan_distill(suite: Suite, stage: DistillStage, inputs: dict[str, StageOutcome]) -> StagePlan:
    from harness.stage_outputs import trial_files

    datasets = [
        (t.tags.get(f"{TAG}.source", "?"), str(p))
        for t, p in trial_files(inputs[stage.from_stage], "dataset.npz")
    ]
    if not datasets:
        raise ValueError(f"stage {stage.from_stage!r} produced no datasets; nothing to distill")

    def trial_tags(cfg: dict[str, Any]) -> dict[str, str]:
        return {
            f"{TAG}.backend": cfg["backend"],
            f"{TAG}.source": cfg["source"],
            f"{TAG}.seed": str(cfg["seed"]),
            f"{TAG}.max_complexity": str(cfg["max_complexity"]),
            f"{TAG}.config": _tags_json({k: cfg[k] for k in ("backend", "source", "seed", "max_complexity")}),
        }

    trial_params = _params_of(("backend", "source", "seed", "max_complexity", "settings"))

    space = {
        "backend": tune.grid_search(list(stage.backends)),
        "seed": tune.grid_search(list(stage.seeds)),
        "max_complexity": tune.grid_search(list(stage.max_complexities)),
        "source": tune.grid_search([s for s, _ in datasets]),
        "datasets": dict(datasets),
        "settings": dict(stage.settings),
        "choose": stage.choose,
    }
    n = len(stage.backends) * len(stage.seeds) * len(stage.max_complexities) * len(datasets)
    return StagePlan(_distill_entry, space, n, "best_r2_val", "max", trial_tags, trial_params)


def _distill_entry(config: dict[str, Any]) -> None:
    distill_trainable({**config, "dataset": config["datasets"][config["source"]]})


def finalize_distill(stage: DistillStage, outcome: StageOutcome, outdir: Any, log: Any) -> None:
    """Merge the trials' fronts per source (teacher) and choose the equation each goes on with."""
    from pathlib import Path

    from harness.stage_outputs import trial_files
    from harness.stages.distill import merge_and_choose

    by_source: dict[str, list[Any]] = {}
    for t, p in trial_files(outcome, "equations.json"):
        by_source.setdefault(t.tags.get(f"{TAG}.source", "source"), []).append(p)
    if not by_source:
        log(f"[{stage.name}] no fronts to merge (all trials failed?)")
        return
    chosen = {}
    for source, fronts in sorted(by_source.items()):
        sub = Path(outdir) / source if len(by_source) > 1 else Path(outdir)
        files = merge_and_choose(fronts, stage.choose, sub)
        chosen[source] = str(files["chosen.json"])
    outcome.extra["chosen"] = chosen


FINALIZERS["distill"] = finalize_distill


# ---------------------------------------------------------------------------------------------
# meta_tune
# ---------------------------------------------------------------------------------------------
def meta_tune_trainable(config: dict[str, Any]) -> None:
    """Tune trainable: meta-tune one equation's constants on the target optimizee."""
    import tempfile

    from harness.runner import report_artifacts
    from harness.stages.meta_tune import meta_tune, write_outputs

    set_trial_threads()
    start = time.time()
    result = meta_tune(
        config["equation"],
        config["optimizee"],
        method=config["method"],
        seed=int(config["seed"]),
        **config["settings"],
    )
    with tempfile.TemporaryDirectory() as out:
        files = write_outputs(result, out)
        metrics = {k: float(v) for k, v in result.summary().items() if isinstance(v, int | float)}
        metrics["seconds"] = time.time() - start
        report_artifacts({**metrics, "final": True, "final_keys": list(metrics), "status": "ok"}, files)


@planner("meta_tune")
def plan_meta_tune(suite: Suite, stage: MetaTuneStage, inputs: dict[str, StageOutcome]) -> StagePlan:
    from harness.stage_outputs import equations_from_stage

    if stage.from_stage:
        equations = [str(p) for _, p in equations_from_stage(inputs[stage.from_stage])]
    else:
        equations = [str(stage.equation)]

    def trial_tags(cfg: dict[str, Any]) -> dict[str, str]:
        return {
            f"{TAG}.method": cfg["method"],
            f"{TAG}.seed": str(cfg["seed"]),
            f"{TAG}.config": _tags_json({k: cfg[k] for k in ("equation", "method", "seed")}),
        }

    trial_params = _params_of(("equation", "optimizee", "method", "seed", "settings"))

    space = {
        "equation": tune.grid_search(equations),
        "seed": tune.grid_search(list(stage.seeds)),
        "optimizee": _optimizee_dict(stage.optimizee),
        "method": stage.method,
        "settings": dict(stage.settings),
    }
    return StagePlan(
        meta_tune_trainable,
        space,
        len(equations) * len(stage.seeds),
        "heldout_after",
        "min",
        trial_tags,
        trial_params,
    )
