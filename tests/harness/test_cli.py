"""Every ``sl2o`` command meets bad input with one ``error:`` line and exit code 2; ``--debug`` shows the
traceback instead. Read-only commands never create a store and give up on an unreachable one quickly."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config.suite import SuiteError

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "suites" / "baselines-smoke.yaml"


def sl2o(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def assert_one_error(args: list[str], fragment: str) -> str:
    code, out, err = sl2o(*args)
    assert code == 2, (code, out, err)
    assert err.startswith("error: ") and err.count("error:") == 1, err
    assert "Traceback" not in err + out
    assert fragment in " ".join(err.split()), err
    return err


@pytest.fixture
def bad_suite(tmp_path: Path) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(SUITE.read_text().replace("seeds:", "seedz:"))
    return p


def test_validate_ok_and_bad(bad_suite: Path) -> None:
    code, out, _ = sl2o("validate", str(SUITE))
    assert code == 0 and "OK" in out
    assert_one_error(["validate", str(bad_suite)], "stages[0].seedz: unknown field")
    assert_one_error(["validate", str(bad_suite.with_name("none.yaml"))], "does not exist")


def test_debug_shows_the_traceback_instead(bad_suite: Path) -> None:
    res = CliRunner().invoke(app, ["--debug", "validate", str(bad_suite)])
    assert res.exit_code != 0 and isinstance(res.exception, SuiteError)
    assert "error:" not in res.stderr


def test_run_refuses_a_bad_suite_before_anything_starts(bad_suite: Path, tmp_path: Path) -> None:
    assert_one_error(["run", str(bad_suite), "--workdir", str(tmp_path / "w")], "seedz")
    assert not (tmp_path / "w").exists()
    utf16 = tmp_path / "u16.yaml"
    utf16.write_text(SUITE.read_text(), encoding="utf-16")
    assert_one_error(["run", str(utf16)], "not UTF-8 text")


def _sqlite(path: Path, *tables: str) -> Path:
    con = sqlite3.connect(path)
    for name in tables or ("t",):
        con.execute(f"CREATE TABLE {name} (x)")
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("command", ["leaderboard", "distill-summary"])
@pytest.mark.parametrize(
    ("store", "fragment"),
    [
        ("dir", "is a directory, not an MLflow SQLite database"),
        ("text", "is not an SQLite database, so not an MLflow store"),
        ("sqlite", "is an SQLite database but not a complete MLflow store (no "),
        # a foreign database that happens to have an experiments table: MLflow would add its 60-odd tables
        ("experiments", "is an SQLite database but not a complete MLflow store (no "),
        ("missing", "no MLflow database at"),
    ],
)
def test_read_only_commands_refuse_what_is_not_an_mlflow_store(
    tmp_path: Path, command: str, store: str, fragment: str
) -> None:
    path = tmp_path / "mlflow.db"
    if store == "dir":
        path.mkdir()
    elif store == "text":
        path.write_text("SQLite format 2 but not really\n")
    elif store == "sqlite":
        _sqlite(path)
    elif store == "experiments":
        _sqlite(path, "experiments", "runs", "metrics", "params", "tags")
    before = path.read_bytes() if path.is_file() else None
    assert_one_error([command, "--tracking-uri", f"sqlite:///{path}"], fragment)
    assert_one_error([command, "--workdir", str(tmp_path)], fragment)  # the default store of a workdir
    if before is not None:
        assert path.read_bytes() == before  # nothing written: no MLflow tables created in it
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if store == "missing" else ["mlflow.db"])


@pytest.mark.parametrize("command", ["leaderboard", "distill-summary"])
def test_an_unreachable_server_fails_fast(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    t0 = time.monotonic()
    assert_one_error([command, "--tracking-uri", "http://127.0.0.1:9"], "cannot read the MLflow store at")
    assert time.monotonic() - t0 < 10
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the defaults are the command's own


def test_read_only_commands_give_a_server_one_short_try(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.tracking import store

    seen: dict[str, str | None] = {}

    def fake_init(uri: str) -> None:
        seen.update(
            {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        )
        raise ConnectionError("nobody home")

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")  # a user's own setting wins
    monkeypatch.setattr(store, "init_tracking", fake_init)
    assert_one_error(["leaderboard", "--tracking-uri", "http://example.invalid:5000"], "nobody home")
    assert seen == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"


def test_an_empty_mlflow_store_is_read(tmp_path: Path) -> None:
    from harness import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.init_tracking(uri)
    assert_one_error(["leaderboard", "--tracking-uri", uri], "no finished evaluate trials")
    assert_one_error(["distill-summary", "--tracking-uri", uri], "no finished distill stages")
    assert_one_error(["leaderboard", "--tracking-uri", uri, "--at-cost", "0"], "--at-cost must be a positive")
    assert_one_error(["leaderboard", "--tracking-uri", uri, "--at-cost", "5"], "no finished evaluate trials")


def test_a_command_error_of_an_unexpected_type_names_its_type(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.tracking import store

    def boom(uri: str, workdir: object = None) -> str:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(store, "resolve_tracking_uri", boom)
    assert_one_error(["leaderboard"], "ZeroDivisionError: oops (--debug shows the traceback)")


@pytest.fixture
def eq_file(tmp_path: Path) -> Path:
    p = tmp_path / "eq.json"
    p.write_text(json.dumps({"expression": "-0.1*g_0"}))
    return p


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{\"expression\": \"__import__('os').system('echo hi')\"}", "not a valid equation file"),
        ('{"expression": "g_0", "metrics": [1, 2]}', "'metrics' must be a mapping"),
        ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ("not json", "invalid equation JSON"),
        (b"\xff\xfe{", "not UTF-8 text"),
    ],
)
def test_equation_show_refuses_bad_equation_files(
    tmp_path: Path, content: str | bytes, fragment: str
) -> None:
    p = tmp_path / "eq.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_one_error(["equation", "show", str(p)], fragment)
    assert_one_error(["equation", "show", str(tmp_path / "none.json")], "does not exist")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_text("not an npz"), "not an .npz (zip) file"),
        (lambda p: np.save(p.open("wb"), np.zeros(3)), "not an .npz (zip) file"),
        (lambda p: np.savez(p, a=np.zeros(3)), "it lacks ['X_train'"),
        (
            lambda p: (np.savez(p, a=np.zeros(1000)), p.write_bytes(p.read_bytes()[:300])),
            "not an .npz (zip) file, or a truncated one",
        ),
    ],
    ids=["text", "npy", "wrong-arrays", "truncated"],
)
def test_equation_show_refuses_bad_datasets(eq_file: Path, make: object, fragment: str) -> None:
    ds = eq_file.with_name("ds.npz")
    make(ds)  # type: ignore[operator]
    assert_one_error(["equation", "show", str(eq_file), "--dataset", str(ds)], fragment)
    code, out, _ = sl2o("equation", "show", str(eq_file))
    assert code == 0 and "update = -0.1*g_0" in out


def test_run_never_turns_a_foreign_database_into_an_mlflow_store(tmp_path: Path) -> None:
    """`run` creates a store in a new or empty file, and refuses any other SQLite file that is not one."""
    from harness.tracking.store import StoreError, init_tracking

    foreign = _sqlite(tmp_path / "app.db", "experiments", "users")
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a complete MLflow store"):
        init_tracking(f"sqlite:///{foreign}")
    assert foreign.read_bytes() == before
    empty = tmp_path / "empty.db"
    empty.touch()
    init_tracking(f"sqlite:///{empty}")  # an empty file is a new store
    init_tracking(f"sqlite:///{empty}")  # and then a store it opens again
    assert empty.stat().st_size > 0


def test_control_characters_from_a_file_never_reach_the_terminal(tmp_path: Path) -> None:
    p = tmp_path / "eq.json"
    p.write_text(
        json.dumps({"expression": "-0.1*g_0", "provenance": {"backend": "op\x1b[2J\x1b]0;owned\x07"}})
    )
    res = CliRunner().invoke(app, ["equation", "show", str(p)])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "\x07" not in res.output
    assert "backend=op\\x1b[2J\\x1b]0;owned\\x07" in res.output
    bad = tmp_path / "bad\x1b[31m.yaml"
    bad.write_text("name: [")
    res = CliRunner().invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2 and "\x1b" not in res.output and "bad\\x1b[31m.yaml" in res.output


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        (
            "kind: evaluate",
            "kind: evalute",
            "unknown stage kind 'evalute' (did you mean 'evaluate'?); known kinds:",
        ),
        (
            "    seeds: [0, 1]",
            "    seedz: [0, 1]",
            "unknown field 'seedz' (did you mean 'seeds'?); known fields here:",
        ),
        (
            "name: quadratic_cos,",
            "name: quadratic_co,",
            "unknown optimizee 'quadratic_co' (did you mean 'quadratic_cos'?)",
        ),
    ],
)
def test_typos_get_a_suggestion(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(SUITE.read_text().replace(old, new, 1))
    assert_one_error(["validate", str(path)], fragment)


def test_bare_list_lists_every_kind_of_plug_in() -> None:
    code, out, _ = sl2o("list")
    assert code == 0
    for head in ("optimizees:", "teachers:", "sr-backends:", "stages:"):
        assert head in out
    assert "  evaluate " in out and "  quadratic_cos " in out


def test_debug_works_after_the_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [")
    res = subprocess.run(
        [sys.executable, "-m", "harness.cli", "validate", str(bad), "--debug"], capture_output=True, text=True
    )
    assert res.returncode != 0 and "Traceback" in res.stderr  # --debug shows the traceback


def test_list_shows_each_plugins_first_sentence_whole_and_without_markup() -> None:
    from harness.cli import summary_line

    doc = """RP(extra): RP(small)'s net with inputs ``m_hat, g_hat, eta`` (Sec. 4.3; ``eta`` is learnable).
    Further features can be added through ``extra=``.

    Args: ..."""
    assert (
        summary_line(doc)
        == "RP(extra): RP(small)'s net with inputs m_hat, g_hat, eta (Sec. 4.3; eta is learnable)."
    )
    assert summary_line("Uses :class:`Foo`, e.g. Adam. Then more.") == "Uses Foo, e.g. Adam."
    assert summary_line(None) == ""
    res = CliRunner().invoke(app, ["list", "teachers"], env={"COLUMNS": "80"})
    assert res.exit_code == 0 and "``" not in res.output
    assert "(Sec. 4.3; eta is learnable)." in " ".join(res.output.split())  # whole, wrapped, not cut
