"""Every built-in optimizee and teacher declares its kwargs model (names, types, bounds), and the model
agrees with the constructor: the same names and the same defaults. Suites are validated against the model
(without importing torch), the plug-in is built with the constructor."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from harness.registry import OPTIMIZEES, TEACHERS, Registry

ENTRIES = [(reg, name) for reg in (OPTIMIZEES, TEACHERS) for name in reg.names()]


def _constructor_defaults(factory: Any) -> dict[str, Any]:
    params = inspect.signature(factory).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name not in ("self", "seed", "device") and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


@pytest.mark.parametrize(("registry", "name"), ENTRIES, ids=[f"{r.kind}-{n}" for r, n in ENTRIES])
def test_the_kwargs_model_matches_the_constructor(registry: Registry[Any], name: str) -> None:
    model = registry.params(name)
    assert model is not None, f"built-in {registry.kind} {name!r} declares no kwargs model"
    ctor = _constructor_defaults(registry.get(name))
    assert set(model.model_fields) == set(ctor)
    for field, default in ctor.items():
        declared = model.model_fields[field].default
        if isinstance(default, tuple):
            default = list(default)
        assert declared == default, f"{name}.{field}: model default {declared!r}, constructor {default!r}"


@pytest.mark.parametrize(
    ("registry", "name", "kwargs", "fragment"),
    [
        (OPTIMIZEES, "mlp", {"hidden": [10**9]}, "hidden widths must be 1..65536"),
        (OPTIMIZEES, "mlp", {"hidden": [60_000, 60_000, 60_000]}, "weights between hidden layers"),
        (OPTIMIZEES, "mlp", {"hidden": [4] * 65}, "at most 64 items"),
        (OPTIMIZEES, "cnn", {"width": 10**6}, "less than or equal to 256"),
        (OPTIMIZEES, "quadratic_cos", {"dim": 10**6}, "less than or equal to 4096"),
        (OPTIMIZEES, "mlp", {"batch_size": "128"}, "valid integer"),
        (TEACHERS, "rp", {"hidden": 10**6}, "less than or equal to 1024"),
        (TEACHERS, "dm", {"layers": 1000}, "less than or equal to 8"),
        (TEACHERS, "adam", {"lr": float("inf")}, "finite number"),
    ],
)
def test_sizes_are_bounded_before_anything_is_built(
    registry: Registry[Any], name: str, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        registry.check_kwargs(name, kwargs, name)


def test_a_suite_with_an_absurd_model_is_refused_by_validate() -> None:
    from harness.config.suite import SuiteError, load_suite_dict

    suite = {
        "name": "big",
        "stages": [
            {
                "name": "t",
                "kind": "meta_train",
                "teachers": [{"name": "rp", "kwargs": {"hidden": 10**6, "layers": 1000}}],
                "optimizees": [{"name": "mlp", "kwargs": {"hidden": [10**9]}}],
            }
        ],
    }
    with pytest.raises(SuiteError) as err:
        load_suite_dict(suite, "big.yaml")
    msg = str(err.value)
    assert "stages[0].teachers[0]" in msg and "less than or equal to 1024" in msg
    assert "stages[0].optimizees[0]" in msg and "hidden widths must be 1..65536" in msg
