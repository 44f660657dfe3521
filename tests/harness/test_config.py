"""Suite validation: good files load, bad fields are refused with their YAML path named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config.suite import SuiteError, load_suite, load_suite_dict

SUITES = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"


def smoke() -> dict:
    return yaml.safe_load((SUITES / "baselines-smoke.yaml").read_text())


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_validates(path: Path) -> None:
    suite = load_suite(path)
    assert suite.stages


def test_unknown_field_is_named_with_its_path() -> None:
    data = smoke()
    data["stages"][0]["optimizees"][1]["epocs"] = 3
    with pytest.raises(SuiteError) as err:
        load_suite_dict(data, "smoke.yaml")
    msg = str(err.value)
    assert "stages[0].optimizees[1].epocs" in msg
    assert "unknown field 'epocs'" in msg


def test_unknown_top_level_field() -> None:
    data = smoke()
    data["stagess"] = []
    with pytest.raises(SuiteError, match=r"smoke.yaml: stagess: unknown field"):
        load_suite_dict(data, "smoke.yaml")


def test_wrong_type_names_path() -> None:
    data = smoke()
    data["stages"][0]["seeds"] = "zero"
    with pytest.raises(SuiteError, match=r"stages\[0\]\.seeds"):
        load_suite_dict(data)


def test_unknown_optimizee_lists_known_names() -> None:
    data = smoke()
    data["stages"][0]["optimizees"][0]["name"] = "quadratc"
    with pytest.raises(SuiteError) as err:
        load_suite_dict(data)
    assert "stages[0].optimizees[0].name" in str(err.value)
    assert "quadratic_cos" in str(err.value)


def test_optimizee_kwargs_checked_against_constructor() -> None:
    data = smoke()
    data["stages"][0]["optimizees"][1]["kwargs"]["hiden"] = [3]
    with pytest.raises(SuiteError, match=r"stages\[0\]\.optimizees\[1\].*hiden"):
        load_suite_dict(data)


def test_unknown_grid_lists_known_grids() -> None:
    data = smoke()
    data["stages"][0]["optimizers"] = [{"grid": "tiny"}]
    with pytest.raises(SuiteError, match=r"unknown grid 'tiny'.*paper"):
        load_suite_dict(data)


def test_optimizer_family_fields_are_checked() -> None:
    data = smoke()
    data["stages"][0]["optimizers"] = [{"family": "sgd", "lr": 0.1, "betas": [0.9, 0.99]}]
    with pytest.raises(SuiteError, match=r"stages\[0\]\.optimizers\[0\]\.betas"):
        load_suite_dict(data)
    data["stages"][0]["optimizers"] = [{"family": "rmsprop", "lr": 0.1}]
    with pytest.raises(SuiteError, match=r"stages\[0\]\.optimizers\[0\]"):
        load_suite_dict(data)
    data["stages"][0]["optimizers"] = [{"family": "sgd", "lr": -1}]
    with pytest.raises(SuiteError, match=r"stages\[0\]\.optimizers\[0\]\.lr"):
        load_suite_dict(data)


def test_from_stage_must_name_an_earlier_stage() -> None:
    data = smoke()
    data["stages"][0]["optimizers"].append({"family": "teacher", "from_stage": "teach"})
    with pytest.raises(SuiteError, match="not an earlier stage"):
        load_suite_dict(data)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_suite(bad)
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- 1\n- 2\n")
    with pytest.raises(SuiteError, match="mapping"):
        load_suite(notmap)


def pipeline() -> dict:
    return {
        "name": "pipe",
        "stages": [
            {
                "kind": "meta_train",
                "name": "teach",
                "teachers": [
                    {"name": "rp"},
                    {"name": "rp", "label": "rp+cl", "settings": {"curriculum": True}},
                ],
                "optimizees": [{"name": "quadratic_cos"}],
                "settings": {"episodes": 2},
            },
            {
                "kind": "collect",
                "name": "data",
                "source": {"from_stage": "teach"},
                "optimizees": [{"name": "quadratic_cos"}],
            },
            {"kind": "distill", "name": "sr", "from_stage": "data", "settings": {"iterations": 5}},
            {"kind": "meta_tune", "name": "tune", "from_stage": "sr", "optimizee": {"name": "quadratic_cos"}},
            {
                "kind": "evaluate",
                "name": "eval",
                "optimizees": [{"name": "quadratic_cos", "steps": 10}],
                "optimizers": [
                    {"family": "teacher", "from_stage": "teach"},
                    {"family": "symbolic", "from_stage": "tune"},
                ],
            },
        ],
    }


def test_full_pipeline_validates() -> None:
    suite = load_suite_dict(pipeline())
    assert [s.kind for s in suite.stages] == ["meta_train", "collect", "distill", "meta_tune", "evaluate"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("stages", 0, "settings", "episodez"), 3, "unknown meta-training setting(s) episodez"),
        (("stages", 0, "teachers", 0, "name"), "lstm9", "unknown teacher 'lstm9'"),
        (("stages", 1, "source", "rule"), "adam", "exactly one of from_stage, checkpoint or rule"),
        (("stages", 1, "features"), ["g", "nope"], "unknown feature"),
        (("stages", 2, "backends"), ["gplearn"], "unknown SR backend 'gplearn'"),
        (("stages", 2, "settings", "generations"), 3, "unknown SR setting(s) generations"),
        (("stages", 2, "from_stage"), "teach", "a meta_train stage; it needs a collect stage"),
        (("stages", 3, "method"), "bayes", "stages[3].method"),
        (("stages", 4, "optimizers", 0, "from_stage"), "sr", "it needs a meta_train stage"),
    ],
)
def test_pipeline_errors_name_the_problem(path: tuple, value: object, expected: str) -> None:
    data = pipeline()
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(SuiteError) as err:
        load_suite_dict(data)
    assert expected in str(err.value)


def test_duplicate_teacher_labels_are_refused() -> None:
    data = pipeline()
    data["stages"][0]["teachers"][1].pop("label")
    with pytest.raises(SuiteError, match="labels must be unique"):
        load_suite_dict(data)


def _evaluate_suite(*optimizers: object) -> dict:
    return {
        "name": "s",
        "stages": [
            {
                "kind": "evaluate",
                "name": "e",
                "optimizees": [{"name": "quadratic_cos", "steps": 10}],
                "optimizers": list(optimizers),
            }
        ],
    }


def test_lists_in_explicit_optimizer_entries_are_crossed_like_a_grid_block() -> None:
    from harness.stages.evaluate import resolve_optimizers
    from harness.training.labels import optimizer_label

    suite = load_suite_dict(
        _evaluate_suite(
            {"family": "adam", "lr": [0.003, 0.02], "cosine": [False, True]},
            {"family": "adam", "lr": 0.01, "betas": [0.9, 0.99]},  # one pair: a single value
            {"family": "adam", "lr": 0.01, "betas": [[0.8, 0.9], [0.9, 0.999]]},  # a list of pairs: crossed
        )
    )
    labels = [optimizer_label(o) for o in resolve_optimizers(suite.stages[0], {})]
    assert labels == [
        "adam(lr=0.003)",
        "adam(lr=0.02)",
        "adam(cosine,lr=0.003)",
        "adam(cosine,lr=0.02)",
        "adam(betas=(0.9, 0.99),lr=0.01)",
        "adam(betas=(0.8, 0.9),lr=0.01)",
        "adam(lr=0.01)",  # (0.9, 0.999) is Adam's default, so it is not in the label
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"family": "sgd", "lr": [0.1, -1.0]},
            "stages[0].optimizers[0].lr[1]: Input should be greater than 0",
        ),
        ({"family": "sgd", "lr": []}, "stages[0].optimizers[0].lr: List should have at least 1 item"),
        (
            {"family": "sgd", "lr": 0.1, "momentum": [0.0, 0.9], "nesterov": True},
            "nesterov needs momentum > 0",
        ),
    ],
)
def test_bad_list_entries_name_the_item(entry: dict, expected: str) -> None:
    with pytest.raises(SuiteError) as err:
        load_suite_dict(_evaluate_suite(entry))
    assert expected in str(err.value)


def test_grid_files_are_validated_entry_by_entry(tmp_path) -> None:
    bad = tmp_path / "grids.yaml"
    bad.write_text("grids:\n  g:\n    - {family: sgd, lr: [0.1, -1]}\n  h:\n    - {family: evil, lr: 1}\n")
    with pytest.raises(SuiteError, match="grid 'g' of .*lr: Input should be greater than 0"):
        load_suite_dict(_evaluate_suite({"grid": "g", "file": str(bad)}))
    with pytest.raises(SuiteError, match="unknown family 'evil'"):
        load_suite_dict(_evaluate_suite({"grid": "h", "file": str(bad)}))


# ---------------------------------------------------------------------------------------------
# what a run would fail on, caught before it starts
# ---------------------------------------------------------------------------------------------
def test_referenced_files_must_exist_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _evaluate_suite(
        {"family": "teacher", "checkpoint": "teacher.pt"},
        {"family": "symbolic", "equation": "eq.json"},
    )
    data["stages"].insert(0, {**pipeline()["stages"][1], "source": {"checkpoint": "teacher.pt"}})
    data["stages"].insert(
        1,
        {"kind": "meta_tune", "name": "tune", "equation": "eq.json", "optimizee": {"name": "quadratic_cos"}},
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SuiteError) as err:
        load_suite_dict(data, "s.yaml")
    lines = str(err.value).splitlines()
    assert lines == [
        f"s.yaml: stages[0].source.checkpoint: teacher checkpoint 'teacher.pt' does not exist (relative paths are read from {tmp_path})",
        f"s.yaml: stages[1].equation: equation file 'eq.json' does not exist (relative paths are read from {tmp_path})",
        f"s.yaml: stages[2].optimizers[0].checkpoint: teacher checkpoint 'teacher.pt' does not exist (relative paths are read from {tmp_path})",
        f"s.yaml: stages[2].optimizers[1].equation: equation file 'eq.json' does not exist (relative paths are read from {tmp_path})",
    ]
    (tmp_path / "teacher.pt").write_bytes(b"")
    (tmp_path / "eq.json").mkdir()
    with pytest.raises(SuiteError, match=r"stages\[1\]\.equation: equation file 'eq.json' is a directory"):
        load_suite_dict(data, "s.yaml")
    (tmp_path / "eq.json").rmdir()
    (tmp_path / "eq.json").write_text("{}")
    # files that exist but are of another kind are refused before a run starts
    with pytest.raises(SuiteError) as err:
        load_suite_dict(data, "s.yaml")
    assert "teacher checkpoint 'teacher.pt' is not one: not a file written by torch.save" in str(err.value)
    assert "equation file 'eq.json' does not hold an equation" in str(err.value)
    from teachers.checkpoint import save_teacher
    from teachers.rules import SGDRule

    save_teacher(SGDRule(lr=0.1), tmp_path / "teacher.pt")
    (tmp_path / "eq.json").write_text('{"expression": "-0.1*g_0"}')
    assert len(load_suite_dict(data).stages) == 3


def test_a_missing_grid_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        SuiteError, match=r"stages\[0\]\.optimizers\[0\]: grid file '.*nope.yaml' does not exist"
    ):
        load_suite_dict(_evaluate_suite({"grid": "g", "file": str(tmp_path / "nope.yaml")}))


def test_metric_must_be_one_evaluate_records_with_mode_hints() -> None:
    from harness.stages.evaluate import METRIC_MODES, EvalResult

    data = smoke()
    data["metric"] = {"name": "accuracy", "mode": "max"}
    with pytest.raises(SuiteError) as err:
        load_suite_dict(data, "smoke.yaml")
    msg = str(err.value)
    assert msg.startswith("smoke.yaml: metric.name: evaluate trials do not record a metric 'accuracy'")
    assert "test_acc (mode: max)" in msg and "final_train_loss (mode: min)" in msg
    for name in METRIC_MODES:
        data["metric"] = {"name": name, "mode": METRIC_MODES[name]}
        assert load_suite_dict(data).metric.name == name
    # the list is what an evaluate trial records
    result = EvalResult("ok", 3, 3, 0.1, 0.2, 0.9, 1.0)
    assert set(result.metrics()) == set(METRIC_MODES)


@pytest.mark.parametrize("bad", [".", "..", "x" * 101, "a/b", "a b", ""])
@pytest.mark.parametrize("where", ["suite", "stage", "optimizee label", "teacher label"])
def test_names_and_labels_are_short_safe_folder_names(where: str, bad: str) -> None:
    data = pipeline()
    if where == "suite":
        data["name"], path = bad, "name"
    elif where == "stage":
        data["stages"][1]["name"], path = bad, r"stages\[1\]\.name"
    elif where == "optimizee label":
        data["stages"][0]["optimizees"][0]["label"], path = bad, r"stages\[0\]\.optimizees\[0\]\.label"
    else:
        data["stages"][0]["teachers"][0]["label"], path = bad, r"stages\[0\]\.teachers\[0\]\.label"
    with pytest.raises(SuiteError, match=path):
        load_suite_dict(data)


def test_names_and_labels_of_100_characters_pass() -> None:
    data = pipeline()
    data["name"] = data["stages"][1]["name"] = "n" * 100
    data["stages"][2]["from_stage"] = "n" * 100
    data["stages"][0]["teachers"][0]["label"] = "dm+cl." + "x" * 94
    data["stages"][0]["optimizees"][0]["label"] = "P1-" + "y" * 97
    assert load_suite_dict(data).name == "n" * 100


def test_an_optimizer_entry_crossing_to_too_many_configs_is_refused() -> None:
    entry = {"family": "sgd", "lr": [0.1] * 101, "momentum": [0.5] * 100}
    with pytest.raises(SuiteError, match=r"optimizers\[0\]: this entry crosses to 10100 optimizer configs"):
        load_suite_dict(_evaluate_suite(entry))


def test_a_grid_crossing_to_too_many_configs_is_refused(tmp_path: Path) -> None:
    grids = tmp_path / "big.yaml"
    grids.write_text(f"grids:\n  big:\n    - {{family: sgd, lr: {[0.1] * 200}, momentum: {[0.5] * 60}}}\n")
    with pytest.raises(SuiteError, match=r"grids.big\[0\] crosses to 12000 optimizer configs"):
        load_suite_dict(_evaluate_suite({"grid": "big", "file": str(grids)}))


def test_check_resources_refuses_more_cpus_than_the_machine_has() -> None:
    from harness.config.suite import check_resources

    data = pipeline()
    data["resources"] = {"cpus_per_trial": 4}
    data["stages"][2]["resources"] = {"cpus_per_trial": 1}
    data["stages"][3]["resources"] = {"cpus_per_trial": 8}
    suite = load_suite_dict(data)
    check_resources(suite, 8)
    with pytest.raises(SuiteError) as err:
        check_resources(suite, 2)
    assert str(err.value).splitlines() == [
        "suite 'pipe': resources.cpus_per_trial: 4 CPUs per trial, but this machine has 2; lower it, "
        "or pass --address of a Ray cluster that has them",
        "suite 'pipe': stages[3].resources.cpus_per_trial: 8 CPUs per trial, but this machine has 2; lower it, "
        "or pass --address of a Ray cluster that has them",
    ]
    with pytest.raises(SuiteError, match=r"stages\[3\]\.resources\.cpus_per_trial: 8 CPUs"):
        check_resources(suite, 4.5)


def test_an_explicit_null_setting_is_refused_where_the_setting_takes_no_null() -> None:
    base = {
        "kind": "meta_train",
        "name": "t",
        "teachers": [{"name": "rp"}],
        "optimizees": [{"name": "quadratic_cos"}],
    }
    with pytest.raises(SuiteError, match=r"stages\[0\]\.settings\.unroll: Input should be a valid integer"):
        load_suite_dict({"name": "s", "stages": [{**base, "settings": {"unroll": None}}]})
    # where null means something (no episode budget), it is accepted
    load_suite_dict({"name": "s", "stages": [{**base, "settings": {"episodes": None, "time_budget_s": 5}}]})


# -- horizons ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"steps": 300}, [{"steps": 300, "epochs": None}]),
        ({"steps": [300, 1500]}, [{"steps": 300, "epochs": None}, {"steps": 1500, "epochs": None}]),
        ({"steps": [300]}, [{"steps": 300, "epochs": None}]),
        ({"epochs": 5}, [{"steps": None, "epochs": 5.0}]),
        ({"epochs": [1, 2.5]}, [{"steps": None, "epochs": 1.0}, {"steps": None, "epochs": 2.5}]),
        ({}, [{"steps": None, "epochs": None}]),
    ],
)
def test_an_evaluate_optimizee_gives_one_horizon_or_a_list(budget: dict, expected: list) -> None:
    data = smoke()
    data["stages"][0]["optimizees"] = [{"name": "quadratic_cos", **budget}]
    entry = load_suite_dict(data).stages[0].optimizees[0]  # type: ignore[attr-defined]
    got = [{"steps": h.steps, "epochs": h.epochs} for h in entry.horizons()]
    assert got == expected


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"steps": []}, "steps: give at least one horizon, e.g. steps: [300, 1500]"),
        ({"steps": [300, 0]}, "steps: 0 is not a positive whole number of steps"),
        ({"steps": [300, -5]}, "steps: -5 is not a positive whole number of steps"),
        ({"steps": [300, 12.5]}, "steps: 12.5 is not a positive whole number of steps"),
        ({"steps": [300, "x"]}, "steps: 'x' is not a positive whole number of steps"),
        ({"steps": [300, True]}, "steps: True is not a positive whole number of steps"),
        ({"steps": [300, [1]]}, "steps: [1] is not a positive whole number of steps"),
        ({"steps": [300, 1500, 300]}, "steps: steps lists 300 more than once; give each horizon once"),
        ({"epochs": [1, 1.0]}, "epochs: epochs lists 1 more than once"),
        ({"epochs": [0.0]}, "epochs: 0.0 is not a positive number of epochs"),
        ({"epochs": [float("nan")]}, "epochs: nan is not a positive number of epochs"),
        ({"steps": list(range(1, 34))}, "steps: 33 horizons are more than 32"),
        ({"steps": True}, "steps: True is not a number of steps"),
        ({"steps": "many"}, "steps: 'many' is not a number of steps"),
        ({"steps": 0}, "steps: 0 is not a positive whole number of steps"),
        ({"steps": 2.5}, "steps: 2.5 is not a positive whole number of steps"),
        ({"epochs": -1}, "epochs: -1 is not a positive number of epochs"),
        ({"steps": [300, 1500], "epochs": [1]}, "give either steps or epochs, not both"),
    ],
)
def test_bad_horizons_are_refused_with_their_path(budget: dict, expected: str) -> None:
    data = smoke()
    data["stages"][0]["optimizees"][0] = {"name": "quadratic_cos", **budget}
    with pytest.raises(SuiteError) as err:
        load_suite_dict(data, "s.yaml")
    msg = str(err.value)
    assert f"s.yaml: stages[0].optimizees[0].{expected}" in msg or expected in msg, msg
    assert len(msg.splitlines()) == 1, msg


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (("stages", 0, "optimizees", 0), "meta_train"),
        (("stages", 1, "optimizees", 0), "collect"),
        (("stages", 3, "optimizee"), "meta_tune"),
    ],
)
@pytest.mark.parametrize("budget", [{"steps": [300, 1500]}, {"epochs": [1, 5]}])
def test_stages_that_train_at_one_horizon_refuse_a_list_naming_their_kind(
    path: tuple, kind: str, budget: dict
) -> None:
    data = pipeline()
    node = data
    for p in path:
        node = node[p]
    node.update(budget)
    with pytest.raises(SuiteError) as err:
        load_suite_dict(data, "p.yaml")
    unit, values = next(iter(budget.items()))
    where = ".".join(str(p) for p in path[2:]).replace(".0", "[0]")
    assert str(err.value) == (
        f"p.yaml: stages[{path[1]}].{where}.{unit}: a {kind} stage trains at one horizon; give {unit}: "
        f"{values[0]} (a list of horizons is for evaluate stages)"
    )
    node[unit] = values[:1]  # a one-item list is that one horizon
    assert load_suite_dict(data).stages[path[1]]


def test_one_item_list_is_the_same_spec_as_the_number() -> None:
    from harness.config.suite import OptimizeeSpec

    assert OptimizeeSpec(name="quadratic_cos", steps=[300]) == OptimizeeSpec(name="quadratic_cos", steps=300)  # type: ignore[arg-type]


def _caps_suite(seeds: int, grid: bool = True) -> dict:
    optimizers = [{"grid": "paper"}] if grid else [{"family": "adam", "lr": 0.01}]
    return {
        "name": "caps",
        "stages": [
            {
                "name": "eval",
                "kind": "evaluate",
                "optimizees": [{"name": "quadratic_cos", "steps": [10, 20]}],
                "optimizers": optimizers,
                "seeds": list(range(seeds)),
            }
        ],
    }


def test_trial_caps_refuse_a_stage_that_crosses_to_too_many_trials() -> None:
    from harness.config.suite import MAX_STAGE_TRIALS, check_trial_caps, load_suite_dict, trial_caps
    from search_spaces import load_grid

    suite = load_suite_dict(_caps_suite(2000))
    n = 2 * len(load_grid("paper")) * 2000
    assert n > MAX_STAGE_TRIALS
    with pytest.raises(
        SuiteError,
        match=rf"stages\[0\] \(eval\): at least {n:,} trials, over the cap of 10,000 per stage; .*--max-trials",
    ):
        check_trial_caps(suite)
    assert check_trial_caps(suite, *trial_caps(n, n)) == {"eval": n}  # the flags allow it
    with pytest.raises(SuiteError, match=rf"suite 'caps': at least {n:,} trials in all, over the cap of 5"):
        check_trial_caps(suite, n, 5)


def test_run_checks_the_exact_count_when_it_plans_a_stage() -> None:
    from harness.config.suite import load_suite_dict
    from harness.engine.errors import StageInputError
    from harness.engine.stage import plan_stage

    suite = load_suite_dict(_caps_suite(3, grid=False))
    with pytest.raises(StageInputError, match=r"stage 'eval' plans 6 trials, over the cap of 5 per stage"):
        plan_stage(suite, suite.stages[0], {}, ctx=None, max_trials=5)  # type: ignore[arg-type]


def test_validate_prints_the_trial_count_and_takes_the_cap_flags(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from harness.cli import app

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(_caps_suite(3, grid=False)))
    ok = CliRunner().invoke(app, ["validate", str(f)])
    assert ok.exit_code == 0 and "at least 6 trials" in ok.output
    capped = CliRunner().invoke(app, ["validate", str(f), "--max-trials", "5"])
    assert capped.exit_code == 2 and "over the cap of 5 per stage" in capped.output
