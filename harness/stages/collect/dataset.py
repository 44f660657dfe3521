"""The SR dataset a collect stage writes: scaled inputs/targets, their scales, provenance, one ``.npz``.

Scaling (the paper: "re-scaled to unit variance") and :func:`unscale_equation` are defined here; how the
rows are recorded is :mod:`harness.stages.collect.record`.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sympy

from harness.features import FeatureSpec, parse_variable
from harness.jsonio import to_jsonable
from harness.symbolic.lang import Equation

DATASET_FORMAT = "symbolic-l2o/sr-dataset"
_DATASET_VERSION = 1
_ARRAYS = ("X_train", "y_train", "X_val", "y_val", "x_scale")
MAX_DATASET_BYTES = 2 * 2**30
"""Largest total decompressed size of a dataset ``.npz`` that :meth:`SRDataset.load` reads (bytes); the
sizes the zip declares are checked before anything is decompressed."""
_MAX_MEMBERS = 64


class SRDatasetError(ValueError):
    """A dataset file that is not read: not an npz, truncated, over the size cap, or with the wrong arrays."""


def _check_npz(path: Path) -> None:
    """Refuse a file that is not a zip, has too many members, or declares (in its zip directory or its
    ``.npy`` headers) more than :data:`MAX_DATASET_BYTES` decompressed: before decompressing anything."""
    if not zipfile.is_zipfile(path):
        raise SRDatasetError(
            f"{str(path)!r} is not an SR dataset: not an .npz (zip) file, or a truncated one"
        )
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > _MAX_MEMBERS:
            raise SRDatasetError(f"{str(path)!r} is not an SR dataset: {len(infos)} members")
        total = sum(i.file_size for i in infos)
        if total > MAX_DATASET_BYTES:
            raise SRDatasetError(
                f"{str(path)!r} declares {total} bytes decompressed, over the cap of {MAX_DATASET_BYTES} "
                "(harness.stages.collect.dataset.MAX_DATASET_BYTES)"
            )
        widened = 0
        for info in infos:  # an .npy header's shape sizes the array numpy allocates: it must fit the member
            with zf.open(info) as fh:
                # numpy reads any member that starts with the .npy magic as an array, whatever its name
                if fh.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                    continue
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise SRDatasetError(
                        f"{str(path)!r}: member {info.filename!r} has .npy version {version}"
                    )
            elements = int(np.prod(shape, dtype=object))
            nbytes = elements * dtype.itemsize
            if nbytes > info.file_size:
                raise SRDatasetError(
                    f"{str(path)!r}: member {info.filename!r} claims an array of {nbytes} bytes in "
                    f"{info.file_size} bytes (corrupt or hostile)"
                )
            widened += elements * max(dtype.itemsize, 8)  # the loader holds every array as float64
        if widened > MAX_DATASET_BYTES:
            raise SRDatasetError(
                f"{str(path)!r} holds arrays of {widened} bytes as float64, over the cap of {MAX_DATASET_BYTES} "
                "(harness.stages.collect.dataset.MAX_DATASET_BYTES)"
            )


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
            ``run`` indexing ``meta["runs"]`` (0 for
            :func:`~harness.stages.collect.record.collect_from_gradients`); None if unknown.
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
            parse_variable(n)
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
            metadata=np.array(json.dumps(to_jsonable(metadata), allow_nan=False)),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> SRDataset:
        """Read a file written by :meth:`save` (``allow_pickle=False``: nothing executes).

        Raises FileNotFoundError when it does not exist and :class:`SRDatasetError` naming the file for
        anything else: not an npz, truncated, over :data:`MAX_DATASET_BYTES`, object arrays, wrong arrays.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SR dataset {str(path)!r} does not exist")
        try:
            _check_npz(path)
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in (*_ARRAYS, "names", "metadata") if k not in npz.files]
                if missing:
                    raise SRDatasetError(f"{str(path)!r} is not an SR dataset: it lacks {missing}")
                arrays = {k: npz[k] for k in _ARRAYS}
                arrays.update({k: npz[k] for k in ("index_train", "index_val") if k in npz.files})
                names = [str(n) for n in np.atleast_1d(npz["names"]).tolist()]
                metadata = json.loads(str(npz["metadata"]))
            if not isinstance(metadata, dict) or metadata.get("format") != DATASET_FORMAT:
                found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
                raise SRDatasetError(f"{str(path)!r} is not an SR dataset (format {found!r})")
            if int(metadata.get("version", 0)) > _DATASET_VERSION:
                raise SRDatasetError(
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
        except SRDatasetError:
            raise
        except KeyError as exc:
            raise SRDatasetError(
                f"{str(path)!r} is not a readable SR dataset: its metadata lacks {exc}"
            ) from None
        except (
            ValueError,
            TypeError,
            OSError,
            EOFError,
            RecursionError,
            zipfile.BadZipFile,
            zlib.error,
        ) as exc:
            why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise SRDatasetError(f"{str(path)!r} is not a readable SR dataset: {why}") from None


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
        if not isinstance(sym, sympy.Symbol):
            continue
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
