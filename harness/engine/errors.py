"""How a suite run ends early: an interrupted stage, a stage with errored trials, or inputs it cannot plan from."""

from __future__ import annotations

from dataclasses import dataclass

from harness.stages.outputs import StageOutcome


class SuiteInterrupted(RuntimeError):
    """A stage stopped before all its trials finished (Ctrl-C); rerunning resumes it."""


@dataclass
class TrialFailure:
    """One errored trial: which, why (the error's last line) and where its full log is."""

    label: str
    error: str
    log: str


class StageFailed(RuntimeError):
    """A stage ended with errored trials: it is not finished, and the suite stops after it.

    Rerunning the same command runs only the errored (and any missing) trials of the stage.
    """

    def __init__(self, outcome: StageOutcome, failures: list[TrialFailure]) -> None:
        self.outcome = outcome
        self.failures = failures
        super().__init__(
            f"stage {outcome.name!r}: {len(failures)} of {len(failures) + len(outcome.trials)} trials errored"
        )


class StageInputError(ValueError):
    """A stage cannot be planned from what the earlier stages produced (one clear line)."""
