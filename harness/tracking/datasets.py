"""The SR dataset as an MLflow dataset input: a collect trial's output ("collected"), a distill trial's
input ("training"), described from the file's headers without loading its arrays."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT


def _npy_shape(zf: zipfile.ZipFile, member: str) -> tuple[int, ...]:
    """The shape of an ``.npy`` member of an ``.npz``, from its header alone (nothing else is read)."""
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        return tuple(read(fh)[0])


def sr_dataset_input(path: str | Path, context: str, source_uri: str | None = None) -> DatasetInput:
    """The MLflow dataset input (``log_inputs``) of an SR dataset file, read without loading its arrays.

    Name: its source's label; digest: the SHA-256 of the file (so the collect run that wrote it and every
    distill run that read a copy share one MLflow dataset); source: ``source_uri`` (default the file);
    schema: its input columns and the target (``update``); profile: ``n_train``, ``n_val``, ``n_inputs``
    from the arrays' ``.npy`` headers; the input tag ``mlflow.data.context`` is ``context``.
    """
    from mlflow.types import ColSpec, DataType, Schema

    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    with np.load(path, allow_pickle=False) as npz:
        names = [str(n) for n in np.atleast_1d(npz["names"]).tolist()]
        meta = json.loads(str(npz["metadata"]))
    with zipfile.ZipFile(path) as zf:
        train, val = _npy_shape(zf, "X_train.npy"), _npy_shape(zf, "X_val.npy")
    src = (meta.get("source") or {}) if isinstance(meta, dict) else {}
    uri = source_uri or Path(path).resolve().as_uri()
    scheme = uri.split(":", 1)[0] if ":" in uri else "local"
    schema = Schema([ColSpec(DataType.double, n) for n in [*names, "update"]])
    profile = {"n_train": train[0], "n_val": val[0], "n_inputs": train[1] if len(train) > 1 else 0}
    dataset = Dataset(
        name=str(src.get("label") or src.get("rule") or Path(path).stem),
        digest=sha.hexdigest()[:16],
        source_type="local" if scheme == "file" else scheme,
        source=json.dumps({"uri": uri}),
        schema=json.dumps({"mlflow_colspec": schema.to_dict()}),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
