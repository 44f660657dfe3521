"""The collect stage's pure work (no Ray, no MLflow): run a source rule as the optimizer, record SR rows.

The source (a registered teacher or hand-written rule, or a meta-trained checkpoint) trains each optimizee as
:class:`teachers.optimizer.TeacherOptimizer` with ``lr = 1`` would. Rows are drawn uniformly over (step,
coordinate) pairs with a full lag history: inputs are the lagged SR features (:mod:`harness.features`) in
:meth:`~harness.features.FeatureSpec.variable_names` order, the target is the update ADDED to the coordinate.
Scales are the population std over the TRAIN rows (1.0 where zero or not finite), never centred; an equation
fitted on the scaled rows maps back by :func:`~harness.stages.collect.dataset.unscale_equation`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.features import ETA, FeatureSpec, FeatureState
from harness.registry import TEACHERS
from harness.stages.collect.dataset import SRDataset
from harness.stages.problems import budget_steps, build_problem, resolve_device


# ------------------------------------------------------------------------------------------------
# shared pieces
# ------------------------------------------------------------------------------------------------
def _scale_of(col: np.ndarray) -> float:
    s = float(np.std(col)) if col.size else 0.0
    return s if math.isfinite(s) and s > 0.0 else 1.0


def _finish(
    X_raw: np.ndarray,
    y_raw: np.ndarray,
    index: np.ndarray,
    names: list[str],
    spec: FeatureSpec,
    n_samples: int,
    holdout: float,
    rng: np.random.Generator,
    source: dict[str, Any],
    meta: dict[str, Any],
) -> SRDataset:
    """Drop non-finite rows, shuffle, split train/val, rescale to unit variance (train statistics)."""
    finite = np.all(np.isfinite(X_raw), axis=1) & np.isfinite(y_raw)
    dropped = int((~finite).sum())
    X_raw, y_raw, index = X_raw[finite], y_raw[finite], index[finite]
    perm = rng.permutation(X_raw.shape[0])
    X_raw, y_raw, index = X_raw[perm], y_raw[perm], index[perm]
    want_val = int(round(holdout * n_samples))
    total = X_raw.shape[0]
    if total < n_samples + want_val:
        warnings.warn(
            f"collected only {total} usable rows for {n_samples} + {want_val} requested; "
            "splitting what there is in the same proportion",
            stacklevel=3,
        )
        n_val = int(round(total * want_val / (n_samples + want_val)))
        n_train = total - n_val
    else:
        n_train, n_val = n_samples, want_val
    if n_train < 2:
        raise ValueError(f"too few usable rows ({total}) to build an SR dataset")
    Xv, yv = X_raw[:n_val], y_raw[:n_val]
    Xt, yt = X_raw[n_val : n_val + n_train], y_raw[n_val : n_val + n_train]
    x_scale = np.array([_scale_of(Xt[:, j]) for j in range(Xt.shape[1])], dtype=np.float64)
    y_scale = _scale_of(yt)
    meta = {
        **meta,
        "rows_dropped_nonfinite": dropped,
        "rows_available": total,
        "n_train": n_train,
        "n_val": n_val,
    }
    return SRDataset(
        Xt / x_scale,
        yt / y_scale,
        Xv / x_scale,
        yv / y_scale,
        names,
        x_scale,
        y_scale,
        spec.to_dict(),
        source,
        meta,
        index_train=index[n_val : n_val + n_train],
        index_val=index[:n_val],
    )


def _columns(spec: FeatureSpec, variables: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    """Kept variable names (in spec order) and their column indices in the flat ``[F*T]`` history."""
    all_names = spec.variable_names()
    if variables is None:
        return all_names, np.arange(len(all_names))
    wanted = set(variables)
    unknown = sorted(wanted - set(all_names))
    if unknown:
        raise ValueError(
            f"variables {unknown} are not produced by features {list(spec.names)} with {spec.lags} lags"
        )
    idx = [i for i, n in enumerate(all_names) if n in wanted]
    return [all_names[i] for i in idx], np.array(idx)


def _sample_grid(
    rng: np.random.Generator, n_steps_valid: int, n_coords: int, k: int
) -> tuple[np.ndarray, ...]:
    """``k`` distinct (step offset, coordinate) pairs drawn uniformly (all of them if fewer exist)."""
    grid = n_steps_valid * n_coords
    k = min(k, grid)
    flat = np.sort(rng.choice(grid, size=k, replace=False)) if k < grid else np.arange(grid)
    return flat // n_coords, flat % n_coords


# ------------------------------------------------------------------------------------------------
# synthetic targets from recorded gradients (sanity checks)
# ------------------------------------------------------------------------------------------------
def collect_from_gradients(
    grads: np.ndarray,
    target_fn: Callable[[np.ndarray], np.ndarray],
    lags: int = 20,
    features: Sequence[str] = ("g",),
    *,
    variables: Sequence[str] | None = None,
    n_samples: int = 5000,
    holdout: float = 0.2,
    seed: int = 0,
    feature_kwargs: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> SRDataset:
    """An SR dataset of a synthetic target computed from a recorded gradient sequence.

    Args:
        grads: ``[steps, n_coords]`` gradients, row ``s`` is the gradient of step ``t = s + 1``.
        target_fn: maps ``grads`` (float64) to ``[steps, n_coords]`` targets, causally (row ``s`` may
            only use rows ``<= s``); e.g. ``lambda G: -0.01 * G``.
        lags: history length T; rows are taken at steps ``t >= T`` only.
        features: feature names (see :mod:`harness.features`) computed from ``grads`` in float64.
        variables: keep only these ``feature_lag`` columns (e.g. all ``g`` lags plus ``m_hat_0``).
        n_samples, holdout: ``n_samples`` training rows and ``round(holdout * n_samples)`` held-out rows,
            drawn uniformly over (step, coordinate) without replacement.
        feature_kwargs: ``FeatureSpec`` constants (``beta1``, ``beta2``, ``eps``, ``norm_p``).
        source: description stored in the dataset (default ``{"synthetic": True}``).
    """
    G = np.asarray(grads, dtype=np.float64)
    if G.ndim != 2:
        raise ValueError(f"grads must be [steps, n_coords], got shape {G.shape}")
    steps, n = G.shape
    T = int(lags)
    if steps < T:
        raise ValueError(f"need at least lags={T} gradient steps, got {steps}")
    Y = np.asarray(target_fn(G), dtype=np.float64)
    if Y.shape != G.shape:
        raise ValueError(f"target_fn must return {G.shape}, got {Y.shape}")
    spec = FeatureSpec(tuple(features), T, **dict(feature_kwargs or {}))
    names, col_idx = _columns(spec, variables)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    want = n_samples + int(round(holdout * n_samples))
    t_off, coords = _sample_grid(rng, steps - T + 1, n, want)
    sub, pos = np.unique(coords, return_inverse=True)
    fs = FeatureState(spec, len(sub), dtype=torch.float64)
    Gt = torch.from_numpy(G[:, sub])
    X_rows = np.empty((len(coords), len(names)))
    y_rows = np.empty(len(coords))
    for s in range(steps):
        fs.update(Gt[s])
        t = s + 1
        if t < T:
            continue
        sel = np.nonzero(t_off == t - T)[0]
        if sel.size:
            hist = fs.lagged().numpy().reshape(len(sub), -1)
            X_rows[sel] = hist[pos[sel]][:, col_idx]
            y_rows[sel] = Y[s, coords[sel]]
    meta = {"steps": steps, "n_coords": n, "lags": T}
    index = np.stack([np.zeros_like(coords), t_off + T, coords], axis=1)
    return _finish(
        X_rows, y_rows, index, names, spec, n_samples, holdout, rng, dict(source or {"synthetic": True}), meta
    )


# ------------------------------------------------------------------------------------------------
# the collect stage
# ------------------------------------------------------------------------------------------------
def build_teacher(source: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The teacher of ``source`` in eval mode, and a plain description of it.

    ``source`` is ``{"rule": name, "kwargs": {...}}`` (a ``TEACHERS`` entry) or ``{"checkpoint": path}``
    (a meta-trained teacher); an optional ``"label"`` (display name) is kept in the description.
    """
    source = dict(source)
    if ("rule" in source) == ("checkpoint" in source):
        raise ValueError(
            "collect source needs exactly one of 'rule' (a registered teacher) or "
            f"'checkpoint' (a teacher checkpoint path); got keys {sorted(source)}"
        )
    allowed = {"rule", "kwargs", "label"} if "rule" in source else {"checkpoint", "label"}
    unknown = set(source) - allowed
    if unknown:
        raise ValueError(f"unknown collect source keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "rule" in source:
        kwargs = dict(source.get("kwargs") or {})
        teacher = TEACHERS.get(str(source["rule"]))(**kwargs)
        desc: dict[str, Any] = {"rule": str(source["rule"]), "kwargs": kwargs}
    else:
        from teachers.checkpoint import load_teacher

        path = Path(source["checkpoint"])
        teacher = load_teacher(path)
        desc = {"checkpoint": str(path), "teacher": teacher.name, "kwargs": dict(teacher.kwargs)}
    if "label" in source:
        desc["label"] = str(source["label"])
    return teacher.eval(), desc


_SPEC_KEYS = {"name", "kwargs", "steps", "epochs", "label", "seeds", "n_seeds"}


def _optimizee_seeds(spec: Mapping[str, Any], seed: int, seeds_per_optimizee: int) -> list[int]:
    if "seeds" in spec:
        return [int(s) for s in spec["seeds"]]
    return [1000 * int(seed) + k for k in range(int(spec.get("n_seeds", seeds_per_optimizee)))]


def _run(
    teacher: Any,
    opt_spec: Mapping[str, Any],
    opt_seed: int,
    steps: int,
    sr_spec: FeatureSpec,
    col_idx: np.ndarray,
    quota: int,
    rng: np.random.Generator,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Train one optimizee with the teacher; return sampled rows ``(X_raw, y_raw)``, their
    ``(step, coordinate)`` and run facts."""
    T = sr_spec.lags
    optimizee = build_problem(opt_spec, opt_seed, device)
    if opt_spec.get("steps") is not None or opt_spec.get("epochs") is not None:
        steps = budget_steps(optimizee, opt_spec.get("steps"), opt_spec.get("epochs"))
    if steps < T:
        raise ValueError(
            f"optimizee {opt_spec['name']!r}: {steps} steps < lags={T}; no row would have a full history"
        )
    module = optimizee.module()
    params = [p for p in module.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    t_off, coords = _sample_grid(rng, steps - T + 1, n, quota)
    sub, pos = np.unique(coords, return_inverse=True)
    sub_t = torch.as_tensor(sub, device=device)
    coords_t = torch.as_tensor(coords, device=device)
    sr_state = FeatureState(sr_spec, len(sub), device=device)
    t_features = teacher.new_feature_state(n, device)
    t_state = teacher.init_state(n, device)
    X_rows = np.full((len(coords), len(col_idx)), np.nan)
    y_rows = np.full(len(coords), np.nan)
    batches = optimizee.batches("train")
    first_loss = last_loss = math.nan
    status, done = "ok", 0
    for t in range(1, steps + 1):
        loss = optimizee.module_loss(module, next(batches))
        last_loss = float(loss.detach())
        if not math.isfinite(last_loss):
            status = "diverged"
            break
        if t == 1:
            first_loss = last_loss
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        flat = torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float32)
                for g, p in zip(grads, params, strict=True)
            ]
        )
        with torch.no_grad():
            update, t_state = teacher(t_features.update(flat), t_state)
            sr_state.update(flat[sub_t])
            if t >= T:
                sel = np.nonzero(t_off == t - T)[0]
                if sel.size:
                    hist = sr_state.lagged().reshape(len(sub), -1)
                    X_rows[sel] = (
                        hist[torch.as_tensor(pos[sel], device=device)].double().cpu().numpy()[:, col_idx]
                    )
                    y_rows[sel] = update[coords_t[torch.as_tensor(sel, device=device)]].double().cpu().numpy()
            offset = 0
            for p in params:
                k = p.numel()
                p.add_(update[offset : offset + k].view_as(p).to(p.dtype))
                offset += k
        done = t
    info = {
        "optimizee": str(opt_spec["name"]),
        "seed": opt_seed,
        "steps": done,
        "status": status,
        "n_coords": n,
        "first_loss": first_loss,
        "last_loss": last_loss,
    }
    return X_rows, y_rows, np.stack([t_off + T, coords], axis=1), info


def collect(
    source: dict[str, Any],
    optimizees: list[dict[str, Any]],
    features: list[str] | None = None,
    lags: int = 20,
    n_samples: int = 5000,
    holdout: float = 0.2,
    steps: int = 200,
    seed: int = 0,
    feature_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
    *,
    variables: list[str] | None = None,
    seeds_per_optimizee: int = 2,
    on_run: Callable[[int, int], None] | None = None,
) -> SRDataset:
    """Run ``source`` as the optimizer on ``optimizees`` and build its SR dataset (see the module docstring).

    Args:
        source: ``{"rule": name, "kwargs": {...}}`` (any ``TEACHERS`` entry) or ``{"checkpoint": path}``.
        optimizees: specs ``{"name", "kwargs"?, "steps"? | "epochs"?, "seeds"? | "n_seeds"?, "label"?}``, each
            run on its ``seeds`` (default ``1000*seed + k`` for ``k < seeds_per_optimizee``).
        features: SR feature names; default the teacher's own input features (``Teacher.input_features``).
        lags, steps: history length T (the paper: 20); default steps per run (a spec's wins), >= ``lags``.
        n_samples, holdout: training rows plus ``round(holdout * n_samples)`` held-out rows, split evenly
            across runs; ``seed`` drives the sampling, the split and the default optimizee seeds.
        feature_kwargs: ``FeatureSpec`` constants; default the teacher's (e.g. Adam's betas for ``m_hat``).
        device, variables, on_run: where it runs; the ``feature_lag`` columns to keep; a progress callback
            given (runs done, runs in all) after each run.
    """
    t0 = time.perf_counter()
    if not optimizees:
        raise ValueError("collect needs at least one optimizee spec")
    if not 0.0 <= holdout < 1.0 or n_samples < 2:
        raise ValueError(f"need n_samples >= 2 and 0 <= holdout < 1, got {n_samples}, {holdout}")
    dev = resolve_device(device)
    teacher, desc = build_teacher(source)
    teacher.to(dev)
    tspec: FeatureSpec = teacher.input_features()
    names_wanted = tuple(features) if features else tspec.names
    constants = tspec.constants()
    if ETA not in names_wanted:
        constants.pop("eta_params", None)
    constants.update(dict(feature_kwargs or {}))
    sr_spec = FeatureSpec(names_wanted, int(lags), **constants)
    names, col_idx = _columns(sr_spec, variables)
    for spec in optimizees:
        if "name" not in spec:
            raise ValueError(f"optimizee spec {dict(spec)} lacks 'name'")
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ValueError(f"unknown optimizee spec keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}")
    runs = [(spec, s) for spec in optimizees for s in _optimizee_seeds(spec, seed, seeds_per_optimizee)]
    if not runs:
        raise ValueError("no optimizee runs (every spec has an empty seed list)")
    want = n_samples + int(round(holdout * n_samples))
    quota = int(math.ceil(want / len(runs)))
    X_parts, y_parts, i_parts, infos = [], [], [], []
    for i, (spec, s) in enumerate(runs):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2, i]))
        X, y, where, info = _run(teacher, spec, s, int(steps), sr_spec, col_idx, quota, rng, dev)
        X_parts.append(X)
        y_parts.append(y)
        i_parts.append(np.column_stack([np.full(len(y), i), where]))
        infos.append(info)
        if on_run is not None:  # (runs done, runs in all)
            on_run(i + 1, len(runs))
    meta = {
        "runs": infos,
        "lags": sr_spec.lags,
        "teacher_feature_spec": tspec.to_dict(),
        "optimizees": [dict(o) for o in optimizees],
        "seed": int(seed),
        "time_s": time.perf_counter() - t0,
    }
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    return _finish(
        np.concatenate(X_parts),
        np.concatenate(y_parts),
        np.concatenate(i_parts),
        names,
        sr_spec,
        n_samples,
        holdout,
        rng,
        desc,
        meta,
    )
