"""The stage contract, checked over every registered stage kind, and a plug-in kind found by entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from harness.config.suite import SuiteError, load_suite_dict
from harness.registry import STAGES, Registry, _stage_kind
from harness.stages.base import LocalContext, StageKind, run_local

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@pytest.mark.parametrize("name", STAGES.names())
def test_every_registered_kind_keeps_the_contract(name: str) -> None:
    kind = STAGES.get(name)
    assert isinstance(kind, StageKind) and kind.name == name
    kind.check()
    assert issubclass(kind.spec_model, BaseModel) and issubclass(kind.trial_model, BaseModel)
    assert kind.metric and kind.mode in ("min", "max")
    assert all(isinstance(o, str) and o for o in kind.outputs)
    assert set(kind.identity) <= set(kind.trial_model.model_fields), "identity names trial fields"
    # trial models are frozen: a trial cannot change on its way into Ray Tune
    assert kind.trial_model.model_config.get("frozen") is True


def test_builtin_kinds() -> None:
    assert {"meta_train", "collect", "distill", "meta_tune", "evaluate"} <= set(STAGES.names())


def test_a_kind_missing_parts_is_refused() -> None:
    class NoSpec(StageKind):  # type: ignore[type-arg]
        name = "broken"
        metric = "x"

    with pytest.raises(TypeError, match="spec_model"):
        _stage_kind(NoSpec)
    with pytest.raises(TypeError, match="StageKind"):
        _stage_kind(object())


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(
        SuiteError, match="unknown stage kind 'nope'; known kinds: .*evaluate.*symbolic_l2o.stages"
    ):
        load_suite_dict({"name": "s", "stages": [{"kind": "nope", "name": "a"}]})
    with pytest.raises(SuiteError, match="a stage needs 'kind:' one of .*evaluate.*symbolic_l2o.stages"):
        load_suite_dict({"name": "s", "stages": [{"name": "a"}]})


@pytest.fixture
def plugin_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield PLUGINS
    sys.modules.pop("sl2o_lr_probe", None)


def test_plugin_kind_registers_through_the_entry_point_and_runs_without_ray(plugin_path: Path) -> None:
    reg: Registry[StageKind] = Registry("stage kind", "symbolic_l2o.stages", adapt=_stage_kind)
    kind = reg.get("lr_probe")
    assert type(kind).__module__ == "sl2o_lr_probe"
    spec = kind.spec_model.model_validate(
        {"kind": "lr_probe", "name": "probe", "optimizees": [{"name": "quadratic_cos"}], "lrs": [0.01, 0.001]}
    )
    trials = kind.plan(None, spec, {})
    assert [t.lr for t in trials] == [0.01, 0.001]
    ctx = LocalContext()
    result = run_local(kind, trials[0], ctx)
    assert result.status == "ok" and result.metrics["final_train_loss"] > 0
    assert (ctx.outdir / "probe.json").exists() and ctx.steps[0] == 1 and ctx.curves["train_loss"]
    with pytest.raises(ValueError, match="lr"):
        run_local(kind, trials[0].model_copy(update={"lr": -1.0}))


@pytest.mark.parametrize(
    "target",
    [
        "harness.stages.meta_tune.tune:meta_tune",
        "harness.stages.meta_tune.gradient:meta_tune_gradient",
        "harness.stages.meta_tune.optuna_search:meta_tune_optuna",
    ],
)
def test_settings_read_from_source_match_the_imported_signature(target: str) -> None:
    """meta_tune's settings model reads its functions' signatures from source (validate stays torch-free):
    the names and the types pydantic validates must be those of the imported functions."""
    import importlib

    from pydantic import TypeAdapter, ValidationError

    from harness.stages.base import settings_fields

    module, _, name = target.partition(":")
    exclude = ("equation", "optimizee", "device", "on_progress")
    read = settings_fields(target, exclude)
    imported = settings_fields(getattr(importlib.import_module(module), name), exclude)
    assert list(read) == list(imported)
    for field, annotation in imported.items():
        for value in (None, 3, 2.5, "x", [1, 2], True):
            outcomes = []
            for ann in (annotation, read[field]):
                try:
                    outcomes.append(TypeAdapter(ann).validate_python(value))
                except ValidationError:
                    outcomes.append("refused")
            assert outcomes[0] == outcomes[1], (field, value, outcomes)
