"""The one Registry class: built-ins, entry-point plug-ins, and errors listing known names."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import registry as reg_mod
from harness.cli import app
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

    assert r.names() == ["plugged"] and "plugged" in r  # listed without loading the plug-in
    assert r.describe("plugged").startswith("Dictionary that remembers insertion order")
    assert r.get("plugged") is OrderedDict


def test_listing_imports_no_plug_in_and_shows_brackets_as_text() -> None:
    """``sl2o list`` (but sr-backends, whose availability needs the backend) imports no plug-in module and no
    torch; "[available]" and "pip install 'symbolic-l2o[pysr]'" are text, not rich markup."""
    import subprocess

    code = (
        "import sys; from typer.testing import CliRunner; from harness.cli import app;"
        "r = CliRunner().invoke(app, ['list', 'teachers']); assert r.exit_code == 0, r.output;"
        "r2 = CliRunner().invoke(app, ['list', 'optimizees']); assert r2.exit_code == 0, r2.output;"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('harness.teachers.')"
        " or m.startswith('harness.optimizees.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    res = CliRunner().invoke(app, ["list", "sr-backends"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "[available]" in res.output  # linear and skeleton always are


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
    assert reg.describe("thing") == "A probe."  # read from the source
    assert "sl2o_lazy_probe" not in sys.modules  # listed, found and described without importing it
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
