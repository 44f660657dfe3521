"""The distill stage's panels in ``sl2o report``: the merged Pareto front, and the teacher's update against
the chosen equation on held-out rows of the dataset it was fitted on."""

from __future__ import annotations

from pathlib import Path

from harness.registry import STAGES
from harness.stages.collect import SRDataset
from harness.stages.outputs import CHOSEN_FILE, DATASET_FILE, MERGED_FRONT_FILE
from harness.stages.views import Panel, StageView, slug
from harness.symbolic.lang import Equation, ParetoFront
from harness.symbolic.plots import plot_pareto, plot_update_rule

#: at most this many input variables get a panel in the update-rule plot
MAX_RULE_VARS = 6


def distill_panels(view: StageView, out: Path) -> list[Panel]:
    """The merged front (first) and one teacher-vs-equation figure per distilled source."""
    if view.run is None:
        return []
    root = view.download(view.run.run_id, "")
    if root is None:
        return []
    chosen_files = sorted(root.rglob(CHOSEN_FILE))
    sources = sorted({t.tag("source") for t in view.trials if t.tag("source")})
    panels: list[Panel] = []
    fronts: dict[str, ParetoFront] = {}
    mc_c = None
    for chosen in chosen_files:
        source = (
            chosen.parent.name if chosen.parent != root else (sources[0] if len(sources) == 1 else view.name)
        )
        front_path = chosen.with_name(MERGED_FRONT_FILE)
        if front_path.exists():
            fronts[source] = ParetoFront.load(front_path)
            mc_c = fronts[source].provenance.get("mc")
        eq = Equation.load(chosen)
        dataset = dataset_for(view, source)
        if dataset is None:
            continue
        ds = SRDataset.load(dataset)
        X, y = ds.raw("val") if len(ds.y_val) else ds.raw("train")
        short = eq.with_constants([float(f"{c:.3g}") for c in eq.constants])
        name = f"update_rule_{slug(view.name)}" + (f"_{slug(source)}" if len(chosen_files) > 1 else "")
        panels.append(
            Panel(
                plot_update_rule(
                    eq,
                    X,
                    y,
                    ds.names,
                    out / f"{name}.png",
                    max_vars=MAX_RULE_VARS,
                    title=f"{source}: teacher vs distilled rule on held-out rows",
                ),
                f"Teacher vs equation ({view.name}, {source})",
                f"update = {short} (complexity {eq.complexity}). Grey: the teacher's update on held-out rows; "
                "blue: its mean per bin of the input; red dashed: the equation's mean per bin.",
            )
        )
    if fronts:
        path = plot_pareto(
            fronts,
            out / f"pareto_{slug(view.name)}.png",
            title=f"merged Pareto front ({view.name})",
            mc_complexity=int(mc_c) if mc_c is not None and len(fronts) == 1 else None,
        )
        panels.insert(
            0,
            Panel(
                path,
                f"Pareto front ({view.name})",
                "Held-out R² of each equation on the merged front against its complexity; the dashed line "
                "marks the MC pick (the simplest equation within the threshold of the best fit).",
            ),
        )
    return panels


def dataset_for(view: StageView, source: str) -> Path | None:
    """The ``dataset.npz`` a distill stage's source was fitted on: a trial of the closest earlier stage whose
    kind writes datasets, tagged ``sl2o.source`` = ``source`` (the only trial when there is one)."""
    writers = [s for s in view.earlier if s.kind in STAGES and DATASET_FILE in STAGES.get(s.kind).outputs]
    for st in reversed(writers):
        match = [t for t in st.trials if t.tag("source") == source] or (
            list(st.trials) if len(st.trials) == 1 else []
        )
        for t in match:
            got = view.download(t.run_id, DATASET_FILE)
            if got is not None:
                return got
    return None
