"""The one Registry class: built-ins, entry-point plug-ins, and errors listing known names."""

from __future__ import annotations

from importlib.metadata import EntryPoint

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
