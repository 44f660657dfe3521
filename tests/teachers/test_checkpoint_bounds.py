"""Teacher checkpoints are untrusted: constructor arguments are bounded and checked before anything is
built, and a file that does not fit is one TeacherCheckpointError naming it (never a torch traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from teachers.checkpoint import (
    FORMAT,
    MAX_CHECKPOINT_BYTES,
    TeacherCheckpointError,
    check_kwargs,
    load_teacher,
    save_teacher,
)
from teachers.dm import DM
from teachers.rp import RPExtra


def test_documented_bounds() -> None:
    from teachers.params import MAX_HIDDEN, MAX_LAYERS, MAX_PROJ

    assert (MAX_HIDDEN, MAX_LAYERS, MAX_PROJ) == (1024, 8, 1024)
    assert MAX_CHECKPOINT_BYTES == 2**30


@pytest.mark.parametrize(
    ("teacher", "kwargs", "ok"),
    [
        ("rp", {"hidden": 1024, "layers": 8, "proj": 1024}, True),
        ("rp", {"hidden": 1, "layers": None, "proj": 1}, True),
        ("rp_extra", {"extra": ["m09", "mn05", "eta"], "out_scale": 0.1, "eps": 1e-8}, True),
        (None, {"anything": [1, 2], "x": None}, True),  # no teacher named: plain values only
        ("rp", {"hidden": 1025}, False),
        ("dm", {"layers": 9}, False),
        ("dm", {"layers": 0}, False),
        ("rp", {"proj": True}, False),
        ("rp", {"hidden": "20"}, False),
        ("rp", {"out_scale": float("nan")}, False),
        ("rp", {"extra": [["m09"]]}, False),
        ("rp", {"extra": ["m09"] * 65}, False),
        ("dm", {"layers_none": None}, False),
        (None, {"name": "x" * 201}, False),
        (None, {1: 2}, False),
    ],
)
def test_check_kwargs(teacher: str | None, kwargs: dict, ok: bool) -> None:
    if ok:
        assert check_kwargs(kwargs, teacher=teacher) is kwargs
    else:
        with pytest.raises(TeacherCheckpointError, match="ckpt.pt"):
            check_kwargs(kwargs, "ckpt.pt", teacher)


def test_wrong_shapes_and_truncation_name_the_file(tmp_path: Path) -> None:
    path = save_teacher(DM(hidden=6), tmp_path / "dm.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["kwargs"]["hidden"] = 5
    torch.save(ckpt, tmp_path / "shapes.pt")
    with pytest.raises(
        TeacherCheckpointError,
        match=r"shapes\.pt.*weights do not fit teacher 'dm': lstm.cells.0.weight_ih is \(24, 2\) in the file, "
        r"\(20, 2\) for its kwargs",
    ):
        load_teacher(tmp_path / "shapes.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:-200])
    with pytest.raises(TeacherCheckpointError, match=r"cut\.pt' is not a teacher checkpoint"):
        load_teacher(tmp_path / "cut.pt")


def test_bounds_are_checked_before_the_teacher_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import teachers.checkpoint as ck

    built: list[str] = []
    monkeypatch.setattr(ck, "build_teacher", lambda name, kw: built.append(name))
    torch.save(
        {"format": FORMAT, "teacher": "dm", "kwargs": {"hidden": 10**6}, "state_dict": {}}, tmp_path / "t.pt"
    )
    with pytest.raises(TeacherCheckpointError, match=r"hidden: Input should be less than or equal to 1024"):
        load_teacher(tmp_path / "t.pt")
    assert built == []


def test_round_trip_within_bounds(tmp_path: Path) -> None:
    teacher = RPExtra(hidden=5, extra=["m09", "eta"])
    assert load_teacher(save_teacher(teacher, tmp_path / "t.pt")).kwargs == teacher.kwargs


def test_kwargs_within_bounds_build_nothing_larger_than_the_file(tmp_path: Path) -> None:
    """hidden 1024 x 8 layers is inside the kwargs bounds but would allocate 270 MB: the teacher is first built
    on the meta device, its shapes compared with the file's tiny weights, and refused with nothing allocated."""
    import time
    import tracemalloc

    path = save_teacher(DM(hidden=6), tmp_path / "dm.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["kwargs"].update(hidden=1024, layers=8)
    torch.save(ckpt, tmp_path / "huge.pt")
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(TeacherCheckpointError, match=r"huge\.pt.*weights do not fit teacher 'dm'"):
            load_teacher(tmp_path / "huge.pt")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 5 and peak < 64 * 2**20, (time.monotonic() - t0, peak)


def test_integer_keys_in_the_weights_are_a_checkpoint_error(tmp_path: Path) -> None:
    path = save_teacher(DM(hidden=6), tmp_path / "dm.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"] = {0: next(iter(ckpt["state_dict"].values()))}
    torch.save(ckpt, tmp_path / "intkeys.pt")
    with pytest.raises(TeacherCheckpointError, match="'state_dict' must map parameter names to tensors"):
        load_teacher(tmp_path / "intkeys.pt")


@pytest.mark.parametrize("where", ["format", "kwargs", "huge-int"])
def test_a_shared_list_dag_or_a_huge_integer_costs_nothing_to_report(tmp_path: Path, where: str) -> None:
    """A 1 KB pickle of lists sharing their items expands to 2**40 leaves when printed: the error message
    renders untrusted values with depth and length caps."""
    import time

    dag: list = []
    for _ in range(40):
        dag = [dag, dag]
    good = torch.load(save_teacher(DM(hidden=6), tmp_path / "dm.pt"), weights_only=True)
    if where == "format":
        ckpt = {**good, "format": dag}
    elif where == "kwargs":
        ckpt = {**good, "kwargs": {**good["kwargs"], "extra": dag}}
    else:
        ckpt = {**good, "kwargs": {**good["kwargs"], "hidden": 10**5000}}
    torch.save(ckpt, tmp_path / "bad.pt")
    assert (tmp_path / "bad.pt").stat().st_size < 100_000
    t0 = time.monotonic()
    with pytest.raises(TeacherCheckpointError) as err:
        load_teacher(tmp_path / "bad.pt")
    assert time.monotonic() - t0 < 5 and len(str(err.value)) < 1000, str(err.value)[:300]
