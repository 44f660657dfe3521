"""The baseline grids: the paper's 40 configs, named smaller grids, clear errors."""

from __future__ import annotations

import pytest

from harness.config.suite import SGDSpec
from search_spaces import GridError, grid_names, load_grid


def test_paper_grid_is_the_papers_40_configs() -> None:
    grid = load_grid("paper")
    assert len(grid) == 40
    sgd = [g for g in grid if g["family"] == "sgd"]
    adam = [g for g in grid if g["family"] == "adam"]
    assert len(sgd) == 36 and len(adam) == 4
    assert {g["lr"] for g in sgd} == {0.1, 0.01, 0.001}
    assert {g["momentum"] for g in sgd} == {0.5, 0.9, 0.99}
    assert {(g["nesterov"], g["cosine"]) for g in sgd} == {
        (a, b) for a in (False, True) for b in (False, True)
    }
    assert {(g["lr"], g["cosine"]) for g in adam} == {(a, b) for a in (0.01, 0.001) for b in (False, True)}
    assert len({tuple(sorted(g.items())) for g in grid}) == 40


def test_every_grid_entry_is_a_valid_optimizer_config() -> None:
    from harness.config.suite import AdamSpec

    for name in grid_names():
        for cfg in load_grid(name):
            model = SGDSpec if cfg["family"] == "sgd" else AdamSpec
            model.model_validate(cfg)


def test_smoke_grid_has_sgd_and_adam() -> None:
    fams = [g["family"] for g in load_grid("smoke")]
    assert fams.count("sgd") >= 3 and fams.count("adam") >= 3


def test_unknown_grid() -> None:
    with pytest.raises(GridError, match="known grids"):
        load_grid("nope")


def test_the_capped_yaml_loader_works_without_libyaml() -> None:
    """With libyaml the C parser gives the events (faster); without it PyYAML's pure-Python one does, and the
    caps and results are the same."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['yaml._yaml'] = None\n"
        "from search_spaces import safe_yaml\n"
        "assert safe_yaml._CappedLoader.__mro__[1].__name__ == 'SafeLoader'\n"
        "assert safe_yaml.parse_yaml('a: [1, {b: 2}]', 's') == {'a': [1, {'b': 2}]}\n"
        "for bad, frag in [('[' * 60 + ']' * 60, 'nested deeper than 50'), ('a: 1\\na: 2', 'twice')]:\n"
        "    try:\n"
        "        safe_yaml.parse_yaml(bad, 's')\n"
        "    except safe_yaml.YAMLInputError as err:\n"
        "        assert frag in str(err), err\n"
        "    else:\n"
        "        raise AssertionError(bad)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
    from search_spaces import safe_yaml

    assert safe_yaml._CappedLoader.__mro__[1].__name__ == "CEventLoader"  # this machine's PyYAML has libyaml
    assert safe_yaml.parse_yaml("a: [1, {b: 2}]", "s") == {"a": [1, {"b": 2}]}


# -- search spaces (hpo stages) -------------------------------------------------------------------------------
def test_shipped_spaces_sample_what_algoperf_tunes() -> None:
    from search_spaces import load_space, space_names

    assert {"adam", "sgd", "rule"} <= set(space_names())
    adam, sgd, rule = load_space("adam"), load_space("sgd"), load_space("rule")
    assert adam["family"] == "adam" and {"lr", "beta1", "beta2", "weight_decay", "schedule", "warmup"} <= set(
        adam["params"]
    )
    assert sgd["family"] == "sgd" and {"lr", "momentum", "nesterov", "schedule", "warmup"} <= set(
        sgd["params"]
    )
    assert rule["family"] == "symbolic" and {"lr_mult", "schedule", "warmup"} <= set(rule["params"])
    assert adam["params"]["lr"] == {"low": 1e-4, "high": 0.1, "log": True}
    assert set(adam["params"]["schedule"]) == {"constant", "cosine", "linear"}
    # the start points are inside their spaces (checked on load) and are the usual defaults
    assert adam["start"]["lr"] == 0.001 and rule["start"] == {
        "lr_mult": 1.0,
        "schedule": "constant",
        "warmup": 0.0,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  s: {lr: {low: 1}}", "spaces.s must be a mapping with a 'family' field"),
        (
            "  s: {family: sgd, lr: {low: 1, high: 0.1}}",
            r"spaces.s.lr: need finite low < high, got 1.0 and 0.1",
        ),
        ("  s: {family: sgd, lr: {low: 0, high: 1, log: true}}", r"spaces.s.lr: a log range needs low > 0"),
        ("  s: {family: sgd, lr: {low: 0.1, high: 1, step: 2}}", r"spaces.s.lr: unknown keys step"),
        ("  s: {family: sgd, nesterov: []}", r"spaces.s.nesterov: a list of choices must not be empty"),
        (
            "  s: {family: sgd, lr: {low: 0.1, high: 1}, start: {lr: 5}}",
            r"spaces.s.start.lr: 5 is not a sampled",
        ),
        (
            "  s: {family: sgd, lr: {low: 0.1, high: 1}, start: {momentum: 0.9}}",
            r"start.momentum: 0.9 is not a",
        ),
    ],
)
def test_bad_spaces_name_the_field(tmp_path, body: str, message: str) -> None:
    from search_spaces import load_space

    path = tmp_path / "spaces.yaml"
    path.write_text("grids: {}\nspaces:\n" + body + "\n")
    with pytest.raises(GridError, match=message):
        load_space("s", str(path))
    with pytest.raises(GridError, match="unknown search space 'nope'.*known spaces: s"):
        load_space("nope", str(path))
