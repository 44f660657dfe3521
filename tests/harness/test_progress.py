"""Progress lines count a resumed stage's trials on from where it stopped, at this run's pace."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from harness.engine.progress import Progress


def _trial(i: int) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t{i}", config={"trial": i})


def _label(config: dict) -> str:
    return f"trial {config['trial']}"


def test_a_resumed_stage_counts_on_and_its_eta_uses_this_runs_pace() -> None:
    lines: list[str] = []
    p = Progress("eval", 10, lines.append, label=_label, already=3)
    p.start -= 20  # this run's first trial took 20 s
    p.on_trial_complete(0, [], _trial(4))
    assert lines[-1].startswith("[eval] 4/10 trials done, 20s elapsed, ETA 2.0min (trial 4)"), lines

    # Tune pickles its callbacks with the experiment state and unpickles them when it restores the stage
    lines.clear()
    again: Progress = pickle.loads(pickle.dumps(p))
    again.log = lines.append
    assert (again.already, again.done, again.errors) == (4, 0, 0)
    again.start -= 6
    again.on_trial_error(0, [], _trial(5))
    assert lines[-1].startswith(
        "[eval] 5/10 trials done, 1 errored, 6s elapsed, ETA 30s (trial 5 errored)"
    ), lines


def test_stages_running_at_once_share_one_live_display() -> None:
    from harness.engine.progress import BOARD

    lines: list[str] = []
    a = Progress("a", 4, lines.append, label=_label, live=True)
    b = Progress("b", 2, lines.append, label=_label, live=True)
    try:
        a.on_trial_start(0, [], _trial(1))
        b.on_trial_start(0, [], _trial(2))
        live = BOARD._live
        assert live is not None and list(BOARD._shown) == ["a", "b"]  # one display, a table per stage
        assert [str(p.render().title) for p in (a, b)] == ["[a] 0/4 trials, 0s ", "[b] 0/2 trials, 0s "]
        b.on_trial_complete(0, [], _trial(2))
        assert not lines  # printed above the display, not through the plain log
        b.stop()
        assert BOARD._live is live and list(BOARD._shown) == ["a"]  # still showing the other stage
    finally:
        a.stop()
        b.stop()
    assert BOARD._live is None and not BOARD._shown
    a.live = False
    a.on_trial_complete(0, [], _trial(1))
    assert lines[-1].startswith("[a] 1/4 trials done")  # no display: the plain log
