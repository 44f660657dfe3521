"""Live progress of a stage: a line per finished trial (with the stage's ETA), and on a terminal a live
``rich`` display of the running trials (step, latest loss, ETA) fed by their interim results.

Trials send interim results through :meth:`harness.stages.base.TrialContext.progress` (curve points, a
``step`` and, when the kind knows it, ``total_steps``); the runner's Tune callback here turns them into
the display. Outside a terminal (CI, logs) only the lines are printed.

Stages that run at once (a suite run as a graph) share one display, :data:`BOARD`: one table per running
stage, stacked in the order they started (rich allows one live display per console; two would garble).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ray import tune

from harness.cluster.client import ClientLog
from harness.stages.outputs import ResultKey


def _eta(elapsed: float, done: float, total: float) -> str:
    if done <= 0 or total <= done:
        return ""
    left = elapsed / done * (total - done)
    return f"ETA {left:.0f}s" if left < 120 else f"ETA {left / 60:.1f}min"


class LiveBoard:
    """The one live display of this process: a table for each stage whose :class:`Progress` is showing,
    updated from each stage's Tune loop (any thread); lines printed meanwhile go above it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._shown: dict[str, Progress] = {}
        self._live: Any = None

    def show(self, progress: Progress) -> None:
        """Add or redraw ``progress``'s table (starting the display for the first one)."""
        with self._lock:
            self._shown[progress.stage] = progress
            if self._live is None:
                from rich.live import Live

                self._live = Live(self._render(), refresh_per_second=4, transient=True)
                self._live.start()
            else:
                self._live.update(self._render())

    def hide(self, progress: Progress) -> None:
        """Drop ``progress``'s table; the display ends with the last one."""
        with self._lock:
            if self._shown.get(progress.stage) is progress:
                del self._shown[progress.stage]
            if self._live is None:
                return
            if self._shown:
                self._live.update(self._render())
            else:
                self._live.stop()
                self._live = None

    def print(self, msg: str) -> bool:
        """Print ``msg`` above the display; False when none is showing (the caller logs it itself)."""
        with self._lock:
            if self._live is None:
                return False
            self._live.console.print(msg, highlight=False, markup=False)
            return True

    def _render(self) -> Any:
        from rich.console import Group

        return Group(*(p.render() for p in self._shown.values()))


#: the live display every stage of this process shares
BOARD = LiveBoard()


class Progress(tune.Callback):
    """``[stage] done/total trials, errors, elapsed, ETA`` per finished trial; a live table on a terminal.

    ``total`` counts every trial of the stage and ``already`` those an earlier, interrupted run finished, so a
    resumed stage counts on from where it stopped; elapsed time and the ETA are this run's (its own pace).
    """

    def __init__(
        self,
        stage: str,
        total: int,
        log: Callable[[str], None],
        label: Callable[[dict[str, Any]], str] | None = None,
        live: bool = False,
        already: int = 0,
    ) -> None:
        self.stage, self.total, self.log, self.label, self.live = stage, total, log, label, live
        self.already = already
        self.done = self.errors = 0
        self.start = time.time()
        self.running: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into its experiment state
        state = dict(self.__dict__)
        state["log"] = print
        state["live"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restored with Tune's experiment state (a resumed stage): what it counted counts as done before
        this run, whose clock starts now."""
        for name, value in state.items():
            setattr(self, name, value)
        self.already = state.get("already", 0) + state.get("done", 0) + state.get("errors", 0)
        self.done = self.errors = 0
        self.start = time.time()
        self.running = {}
        vars(self).pop("_display", None)  # pickled by an earlier version

    def _counts(self) -> tuple[int, str]:
        """Trials done in all (earlier runs' included) and the ETA from this run's pace."""
        el = time.time() - self.start
        mine = self.done + self.errors
        return self.already + mine, _eta(el, mine, self.total - self.already)

    # -- lines ----------------------------------------------------------------------------------------
    def _line(self, what: str) -> None:
        el = time.time() - self.start
        n, eta = self._counts()
        msg = (
            f"[{self.stage}] {n}/{self.total} trials done"
            f"{f', {self.errors} errored' if self.errors else ''}, {el:.0f}s elapsed"
            f"{f', {eta}' if eta else ''} ({what})"
        )
        if not (self.live and BOARD.print(msg)):
            self.log(msg)

    def _name(self, trial: Any) -> str:
        try:
            return self.label(trial.config) if self.label is not None else str(trial)
        except Exception:  # noqa: BLE001 - a label is a nicety; never break progress over it
            return str(trial)

    # -- the live display -----------------------------------------------------------------------------
    def render(self) -> Any:
        """This stage's table of running trials (step, latest values, ETA)."""
        from rich.table import Table
        from rich.text import Text

        el = time.time() - self.start
        n, eta = self._counts()
        table = Table(
            # Text, not markup: "[stage]" would be read as a style tag and dropped
            title=Text(f"[{self.stage}] {n}/{self.total} trials, {el:.0f}s {eta}"),
            title_justify="left",
            show_edge=False,
        )
        for col in ("trial", "step", "latest", "ETA"):
            table.add_column(col, justify="left" if col == "trial" else "right")
        for r in list(self.running.values())[:12]:
            step, total = r.get("step"), r.get("total")
            steps = f"{step}/{total}" if total else str(step or "")
            tel = time.time() - r["start"]
            eta = _eta(tel, float(step or 0), float(total)) if total else ""
            latest = ", ".join(f"{k} {v:.4g}" for k, v in r.get("latest", {}).items())
            table.add_row(r["name"], steps, latest, eta)
        return table

    def _refresh(self) -> None:
        if self.live:
            BOARD.show(self)

    def stop(self) -> None:
        """Take this stage's table off the live display (the lines stay)."""
        if self.live:
            BOARD.hide(self)

    # -- Tune events ----------------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running[trial.trial_id] = {"name": self._name(trial), "start": time.time()}
        self._refresh()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        r = self.running.setdefault(trial.trial_id, {"name": self._name(trial), "start": time.time()})
        if "step" in result:
            r["step"] = result["step"]
        if result.get("total_steps"):
            r["total"] = result["total_steps"]
        latest = {
            k[len(ResultKey.CURVE_PREFIX) :]: v[-1]
            for k, v in result.items()
            if k.startswith(ResultKey.CURVE_PREFIX)
            and k != ResultKey.CURVE_STEPS
            and isinstance(v, list)
            and v
        }
        if latest:
            r["latest"] = latest
            steps = result.get(ResultKey.CURVE_STEPS) or []
            if steps:
                r["step"] = steps[-1]
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        self.running.pop(trial.trial_id, None)
        self._line(self._name(trial))
        self._refresh()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.errors += 1
        self.running.pop(trial.trial_id, None)
        self._line(f"{self._name(trial)} errored")
        self._refresh()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.stop()


class ClientProgress(Progress):
    """:class:`Progress` whose lines reach the Ray Client (its ``log``, a :class:`harness.cluster.ClientLog`,
    survives pickling)."""

    def __init__(self, *args: Any, sink: ClientLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = self.sink = sink

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["log"] = self.sink  # to the client, not to a worker log on the head
        return state
