"""The collect stage: run a teacher as the optimizer and record (lagged features -> update) rows for SR.

A pure function (no Ray, no MLflow). For every optimizee spec and a few seeds the source rule (a
registered teacher / hand-written rule, or a meta-trained checkpoint) trains the optimizee exactly as
:class:`teachers.optimizer.TeacherOptimizer` with ``lr = 1`` would (``x <- x + update``). Rows are drawn
uniformly over (step, coordinate) pairs whose lag history is full (``t >= T``; ``t`` counts gradients,
starting at 1), across all parameter tensors. Each row holds:

* inputs: the lagged history ``[F, T]`` of the SR features (computed by :mod:`harness.features`, the one
  shared definition; lag 0 = newest), flattened feature-major, lag-minor, i.e. in the order of
  :meth:`~harness.features.FeatureSpec.variable_names` (``g_0, g_1, ..., g_19, m_hat_0, ...``);
* target: the source's update of that coordinate at that step (the value ADDED to the parameter, so
  SGD's is ``-lr * g_0``).

Only the sampled coordinates carry an SR feature state (features are coordinate-wise), so collection
costs one extra feature update over a few thousand coordinates per step, whatever the model size.

Scaling (the paper: "re-scaled to unit variance"): with ``X_raw`` and ``y_raw`` the recorded values,
``x_scale[j] = std(X_raw_train[:, j])`` and ``y_scale = std(y_raw_train)`` (population std over the TRAIN
rows; 1.0 where the std is zero or not finite), and the stored arrays are ``X = X_raw / x_scale``,
``y = y_raw / y_scale`` for both splits (no centring: an offset would change the equation's form). So
``X_raw = X * x_scale`` and ``y_raw = y * y_scale``; :func:`unscale_equation` maps an equation fitted on
``(X, y)`` to the same function over raw features.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sympy
import torch

from harness.features import FeatureSpec, FeatureState
from harness.registry import OPTIMIZEES, TEACHERS
from harness.symbolic.equation import Equation, split_variable

__all__ = [
    "DATASET_FORMAT",
    "SRDataset",
    "build_teacher",
    "collect",
    "collect_from_gradients",
    "unscale_equation",
]

DATASET_FORMAT = "symbolic-l2o/sr-dataset"
_DATASET_VERSION = 1
_ARRAYS = ("X_train", "y_train", "X_val", "y_val", "x_scale")


# ------------------------------------------------------------------------------------------------
# dataset
# ------------------------------------------------------------------------------------------------
@dataclass
class SRDataset:
    """A distillation dataset: scaled inputs/targets, their scales, and how they were made.

    Attributes:
        X_train, X_val: ``[N, V]`` float64 scaled inputs (``X_raw / x_scale``), columns named ``names``.
        y_train, y_val: ``[N]`` float64 scaled targets (``y_raw / y_scale``).
        names: the ``V`` variable names ``feature_lag`` (feature-major, lag-minor; a subset of
            ``FeatureSpec.variable_names()`` when only some variables were kept).
        x_scale: ``[V]`` positive factors: ``X_raw = X * x_scale``.
        y_scale: positive factor: ``y_raw = y * y_scale``.
        feature_spec: ``FeatureSpec.to_dict()`` of the features, so a consumer recomputes them exactly.
        source: what produced the targets (``{"rule": ..., "kwargs": ...}``, a checkpoint, or synthetic).
        meta: plain-JSON facts (optimizees, seeds, steps, rows dropped, time, ...).
        index_train, index_val: ``[N, 3]`` int64 origin of each row: (run, step ``t``, coordinate), with
            ``run`` indexing ``meta["runs"]`` (0 for :func:`collect_from_gradients`); None if unknown.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    names: list[str]
    x_scale: np.ndarray
    y_scale: float
    feature_spec: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    index_train: np.ndarray | None = None
    index_val: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.X_train = np.asarray(self.X_train, dtype=np.float64)
        self.X_val = np.asarray(self.X_val, dtype=np.float64)
        self.y_train = np.asarray(self.y_train, dtype=np.float64).ravel()
        self.y_val = np.asarray(self.y_val, dtype=np.float64).ravel()
        self.x_scale = np.asarray(self.x_scale, dtype=np.float64).ravel()
        self.y_scale = float(self.y_scale)
        self.names = [str(n) for n in self.names]
        v = len(self.names)
        for key in ("X_train", "X_val"):
            arr = getattr(self, key)
            if arr.ndim != 2 or arr.shape[1] != v:
                raise ValueError(f"SRDataset.{key} must be [N, {v}] (one column per name), got {arr.shape}")
        if self.X_train.shape[0] != self.y_train.shape[0] or self.X_val.shape[0] != self.y_val.shape[0]:
            raise ValueError("SRDataset: X and y row counts differ")
        if self.x_scale.shape != (v,) or not np.all(self.x_scale > 0) or not self.y_scale > 0:
            raise ValueError("SRDataset: x_scale must be [V] and all scales positive")
        if len(set(self.names)) != v:
            raise ValueError("SRDataset: duplicate variable names")
        for n in self.names:
            split_variable(n)
        for key, X in (("index_train", self.X_train), ("index_val", self.X_val)):
            idx = getattr(self, key)
            if idx is not None:
                idx = np.asarray(idx, dtype=np.int64)
                if idx.shape != (X.shape[0], 3):
                    raise ValueError(
                        f"SRDataset.{key} must be [N, 3] (run, step, coordinate), got {idx.shape}"
                    )
                setattr(self, key, idx)

    # -- views -----------------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.X_val.shape[0])

    @property
    def spec(self) -> FeatureSpec:
        """The :class:`FeatureSpec` that computes the features."""
        return FeatureSpec.from_dict(self.feature_spec)

    def raw(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """``(X_raw, y_raw)`` of ``split`` (``train`` or ``val``): the values before rescaling."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        X, y = (self.X_train, self.y_train) if split == "train" else (self.X_val, self.y_val)
        return X * self.x_scale, y * self.y_scale

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (no pickled objects): the arrays, ``names`` as a unicode array, and a
        ``metadata`` JSON string (format, version, y_scale, feature_spec, source, meta)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format": DATASET_FORMAT,
            "version": _DATASET_VERSION,
            "y_scale": self.y_scale,
            "feature_spec": self.feature_spec,
            "source": self.source,
            "meta": self.meta,
        }
        index = {k: getattr(self, k) for k in ("index_train", "index_val") if getattr(self, k) is not None}
        np.savez_compressed(
            path,
            **{k: getattr(self, k) for k in _ARRAYS},
            **index,
            names=np.array(self.names, dtype=np.str_),
            metadata=np.array(json.dumps(_plain(metadata), allow_nan=False)),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> SRDataset:
        """Read a file written by :meth:`save` (``allow_pickle=False``: nothing executes)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SR dataset {str(path)!r} does not exist")
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in (*_ARRAYS, "names", "metadata") if k not in npz.files]
            if missing:
                raise ValueError(f"{str(path)!r} is not an SR dataset: it lacks {missing}")
            arrays = {k: npz[k] for k in _ARRAYS}
            arrays.update({k: npz[k] for k in ("index_train", "index_val") if k in npz.files})
            names = [str(n) for n in npz["names"].tolist()]
            metadata = json.loads(str(npz["metadata"]))
        if metadata.get("format") != DATASET_FORMAT:
            raise ValueError(f"{str(path)!r} is not an SR dataset (format {metadata.get('format')!r})")
        if int(metadata.get("version", 0)) > _DATASET_VERSION:
            raise ValueError(
                f"{str(path)!r} has SR dataset version {metadata['version']}, newer than this code"
            )
        return cls(
            names=names,
            y_scale=float(metadata["y_scale"]),
            feature_spec=dict(metadata["feature_spec"]),
            source=dict(metadata.get("source") or {}),
            meta=dict(metadata.get("meta") or {}),
            **arrays,
        )


def _plain(obj: Any) -> Any:
    """Strict-JSON version of metadata (numpy scalars to Python, non-finite floats to None)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


# ------------------------------------------------------------------------------------------------
# equations over scaled data -> raw data
# ------------------------------------------------------------------------------------------------
def unscale_equation(eq: Equation, ds: SRDataset) -> Equation:
    """The equation over RAW features and target, given one fitted on the dataset's scaled data.

    With ``y = f(x)`` fitted on ``x = x_raw / x_scale`` and ``y = y_raw / y_scale``, the raw rule is
    ``y_raw = y_scale * f(x_raw / x_scale)``: each variable ``v`` is replaced by ``v / scale_v`` and the
    whole expression multiplied by ``y_scale``, as sympy Floats (53-bit, so the constants that sympy
    folds are correctly rounded float64 products), then rebuilt with :meth:`Equation.from_sympy`.
    Scales equal to 1 are left out. Metrics are not carried over (they were measured on scaled data);
    provenance is.
    """
    scale = dict(zip(ds.names, ds.x_scale.tolist(), strict=True))
    consts = {s: sympy.Float(v) for s, v in zip(eq.constant_symbols, eq.constants, strict=True)}
    expr = eq.expr.xreplace(consts)
    subs: dict[sympy.Symbol, sympy.Expr] = {}
    for sym in expr.free_symbols:
        if sym.name not in scale:
            raise KeyError(f"equation variable {sym.name!r} is not a column of the dataset")
        if scale[sym.name] != 1.0:
            subs[sym] = sym / sympy.Float(scale[sym.name])
    expr = expr.xreplace(subs)
    if ds.y_scale != 1.0:
        expr = sympy.Float(ds.y_scale) * expr
    return Equation.from_sympy(expr, provenance=eq.provenance)


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
    optimizee = OPTIMIZEES.get(str(opt_spec["name"]))(
        seed=opt_seed, device=device, **dict(opt_spec.get("kwargs") or {})
    )
    if opt_spec.get("steps") is not None:
        steps = int(opt_spec["steps"])
    elif opt_spec.get("epochs") is not None:
        steps = max(1, int(math.ceil(float(opt_spec["epochs"]) * optimizee.steps_per_epoch)))
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
) -> SRDataset:
    """Run ``source`` as the optimizer on ``optimizees`` and build its SR dataset (see module docstring).

    Args:
        source: ``{"rule": name, "kwargs": {...}}`` (any ``TEACHERS`` entry, hand rules included) or
            ``{"checkpoint": path}`` (a meta-trained teacher).
        optimizees: specs ``{"name", "kwargs"?, "steps"? | "epochs"?, "seeds"? | "n_seeds"?, "label"?}``;
            each runs on its ``seeds`` (default ``1000*seed + k`` for ``k < seeds_per_optimizee``) for its
            ``steps`` (or ``epochs`` times its steps per epoch; default the ``steps`` argument).
        features: SR feature names; default the teacher's own input features (the paper's choice).
        lags: history length T (the paper: 20).
        n_samples, holdout: ``n_samples`` training rows plus ``round(holdout * n_samples)`` held-out rows,
            drawn uniformly over (step >= T, coordinate) of every run, split evenly across runs.
        steps: default steps per run (a spec's ``steps`` wins); must be >= ``lags``.
        seed: drives row sampling, the train/val split and the default optimizee seeds.
        feature_kwargs: ``FeatureSpec`` constants (``beta1``, ``beta2``, ``eps``, ``norm_p``); default the
            teacher's, so e.g. Adam's ``m_hat`` uses Adam's betas.
        device: where the optimizee and teacher run.
        variables: keep only these ``feature_lag`` columns.
    """
    t0 = time.perf_counter()
    if not optimizees:
        raise ValueError("collect needs at least one optimizee spec")
    if not 0.0 <= holdout < 1.0 or n_samples < 2:
        raise ValueError(f"need n_samples >= 2 and 0 <= holdout < 1, got {n_samples}, {holdout}")
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    teacher, desc = build_teacher(source)
    teacher.to(dev)
    tspec: FeatureSpec = teacher.feature_spec
    constants = {"beta1": tspec.beta1, "beta2": tspec.beta2, "eps": tspec.eps, "norm_p": tspec.norm_p}
    constants.update(dict(feature_kwargs or {}))
    sr_spec = FeatureSpec(tuple(features) if features else tspec.names, int(lags), **constants)
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
