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
