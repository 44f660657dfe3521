"""The one Registry class: built-ins, entry-point plug-ins, and errors listing known names."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from harness import registry as reg_mod
from harness.registry import OPTIMIZEES, SR_BACKENDS, TEACHERS, Registry, UnknownNameError


def test_unknown_name_lists_known_ones() -> None:
    r: Registry[int] = Registry("widget", "sl2o.test.widgets")
    r.register("a", 1)
    r.register("b", 2)
    with pytest.raises(UnknownNameError) as err:
        r.get("c")
    assert "unknown widget 'c'" in str(err.value) and "a, b" in str(err.value)


def test_register_as_decorator_and_duplicates() -> None:
    r: Registry[object] = Registry("widget", "sl2o.test.widgets")

    @r.register("f")
    def f() -> None: ...

    assert r.get("f") is f and "f" in r and r.names() == ["f"]
    with pytest.raises(ValueError, match="already registered"):
        r.register("f", object())


def test_entry_point_plugins_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="plugged", value="collections:OrderedDict", group="sl2o.test.plugins")

    def fake_entry_points(group: str) -> list[EntryPoint]:
        return [ep] if group == "sl2o.test.plugins" else []

    monkeypatch.setattr(reg_mod, "entry_points", fake_entry_points)
    r: Registry[object] = Registry("plugin", "sl2o.test.plugins")
    from collections import OrderedDict

    assert r.get("plugged") is OrderedDict


def test_builtin_registries_are_populated() -> None:
    assert "quadratic_cos" in OPTIMIZEES.names() and "mlp" in OPTIMIZEES.names()
    assert {"dm", "rp", "rp_small", "rp_extra", "sgd", "adam"} <= set(TEACHERS.names())
    assert {"operon", "pysr"} <= set(SR_BACKENDS.names())


def test_an_entry_registered_by_name_is_imported_on_first_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sl2o_lazy_probe.py").write_text("class Thing:\n    '''A probe.'''\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[type] = Registry("thing", "sl2o.test.none")
    reg.register("thing", "sl2o_lazy_probe:Thing")
    assert reg.names() == ["thing"] and "thing" in reg
    assert "sl2o_lazy_probe" not in sys.modules  # listed and found without importing it
    assert reg.get("thing").__name__ == "Thing"
    assert "sl2o_lazy_probe" in sys.modules
    with pytest.raises(ValueError, match="already registered"):
        reg.register("thing", "sl2o_lazy_probe:Other")


def test_kwargs_are_checked_against_the_params_model_without_importing() -> None:
    from pydantic import BaseModel, ConfigDict, Field

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        width: int = Field(default=4, ge=1, le=64)

    reg: Registry[type] = Registry("thing", "sl2o.test.none")
    reg.register("thing", "sl2o_not_a_module:Thing", params=Params)  # never imported below
    reg.check_kwargs("thing", {"width": 64}, "thing 'thing'")
    with pytest.raises(ValueError, match=r"thing 'thing': width: Input should be less than or equal to 64"):
        reg.check_kwargs("thing", {"width": 65}, "thing 'thing'")
    with pytest.raises(
        ValueError, match=r"takes no argument widht \(did you mean 'width'\?\); it takes: width"
    ):
        reg.check_kwargs("thing", {"widht": 3}, "thing 'thing'")
