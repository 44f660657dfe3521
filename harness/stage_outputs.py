"""What one stage hands the next: teachers, datasets and equations found in finished trials' artifacts.

Used by the trainables' planners (and the CLI's summary); no Ray or MLflow here, only files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def trial_files(outcome: Any, name: str) -> list[tuple[Any, Path]]:
    """``(trial, path)`` for every finished trial of ``outcome`` whose artifacts hold ``name``."""
    out = []
    for t in outcome.trials:
        if t.artifacts is not None and (t.artifacts / name).exists():
            out.append((t, t.artifacts / name))
    return out


def _short(tags: dict[str, str], *keys: str) -> str:
    return "-".join(tags.get(f"sl2o.{k}", "?") for k in keys)


def teachers_from_stage(outcome: Any) -> list[tuple[str, Path]]:
    """``(label, teacher.pt)`` for each meta-trained teacher of a meta_train stage."""
    found = [
        (f"{_short(t.tags, 'teacher')}-s{t.tags.get('sl2o.seed', '?')}", p)
        for t, p in trial_files(outcome, "teacher.pt")
    ]
    if not found:
        raise ValueError(f"stage {outcome.name!r} produced no teacher checkpoints (all its trials failed?)")
    return sorted(found)


def equations_from_stage(outcome: Any) -> list[tuple[str, Path]]:
    """``(label, equation.json)``: the chosen equation of a distill stage, or each meta_tune trial's."""
    if outcome.kind == "distill":
        chosen = getattr(outcome, "extra", {}).get("chosen") or {}
        if chosen:
            label = (lambda src: outcome.name) if len(chosen) == 1 else (lambda src: f"{outcome.name}-{src}")
            return sorted((label(src), Path(p)) for src, p in chosen.items())
        found = [(f"{outcome.name}-{t.run_id[:6]}", p) for t, p in trial_files(outcome, "best.json")]
    else:
        found = [
            (f"{outcome.name}-s{t.tags.get('sl2o.seed', '?')}", p)
            for t, p in trial_files(outcome, "equation.json")
        ]
    if not found:
        raise ValueError(f"stage {outcome.name!r} produced no equations (all its trials failed?)")
    return sorted(found)


def optimizers_from_stage(spec: dict[str, Any], outcome: Any) -> list[dict[str, Any]]:
    """Concrete teacher/symbolic optimizer configs for ``{family, from_stage}`` entries."""
    family = spec["family"]
    base = {k: v for k, v in spec.items() if k not in ("name",)}
    out = []
    if family == "teacher":
        for label, path in teachers_from_stage(outcome):
            out.append({**base, "checkpoint": str(path), "name": spec.get("name") or label})
    elif family == "symbolic":
        for label, path in equations_from_stage(outcome):
            out.append({**base, "equation": str(path), "name": spec.get("name") or label})
    else:
        raise ValueError(f"from_stage is only for teacher and symbolic optimizers, not {family!r}")
    return out


def chosen_equation_text(outcome: Any) -> str:
    """A few lines naming the equation the suite ended with (last meta_tune, else last distill)."""
    from harness.symbolic.equation import Equation

    for st in reversed(list(outcome.stages.values())):
        if st.kind not in ("meta_tune", "distill"):
            continue
        try:
            eqs = equations_from_stage(st)
        except ValueError:
            continue
        lines = [f"chosen equation ({st.kind} stage {st.name!r}):"]
        for label, path in eqs:
            eq = Equation.load(path)
            fit = ", ".join(f"{k}={v:.4g}" for k, v in sorted(eq.metrics.items()) if k.startswith("r2"))
            short = eq.with_constants([float(f"{c:.4g}") for c in eq.constants])
            lines.append(f"  {label}: update = {short}")
            lines.append(
                f"    complexity {eq.complexity}, features {eq.lags_used()}{', ' + fit if fit else ''}"
            )
            lines.append(f"    file: {path}")
        return "\n".join(lines)
    return ""
