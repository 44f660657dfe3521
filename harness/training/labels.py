"""The optimizer families a config may name and a config's short label; torch-free, so a suite's
optimizer entries validate without importing torch (:mod:`harness.training.optimizers` builds them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAMILIES", "optimizer_label"]

FAMILIES = ("sgd", "adam", "teacher", "symbolic")


def _number(val: Any) -> str:
    """A float to 4 significant digits (a tuned config's 0.0473273 reads 0.04733), anything else as is."""
    return f"{val:.4g}" if isinstance(val, float) else str(val)


def optimizer_label(spec: dict[str, Any]) -> str:
    """A short stable name for a config, e.g. ``sgd(lr=0.1,momentum=0.9,nesterov,cosine)``; floats to 4
    significant digits, lists (Adam's betas) in parentheses."""
    family = spec.get("family", "?")
    parts = []
    for key in sorted(spec):
        if key in ("family", "name"):
            continue
        val = spec[key]
        if isinstance(val, bool):
            if val:
                parts.append(key)
        elif key in ("checkpoint", "equation"):
            parts.append(f"{key}={str(val).rsplit('/', 1)[-1]}")
        elif isinstance(val, (list, tuple)):
            parts.append(f"{key}=({', '.join(_number(v) for v in val)})")
        else:
            parts.append(f"{key}={_number(val)}")
    name = spec.get("name")
    if name:  # teachers and equations from earlier stages: their name says which file
        parts = [p for p in parts if not p.startswith(("checkpoint=", "equation="))]
        return f"{family}:{name}" + (f"({','.join(parts)})" if parts else "")
    return f"{family}({','.join(parts)})"
