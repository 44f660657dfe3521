"""Built-in teachers; importing this package registers them in ``harness.registry.TEACHERS``.

Learned (numerical L2O): ``dm``, ``rp``, ``rp_small``, ``rp_extra``. Hand-written: ``sgd``, ``momentum``,
``adam``. See :mod:`teachers.base` for the interface and the update sign convention.
"""

from teachers.base import LSTMStack, Teacher, build_teacher, detach_state, register_teacher
from teachers.dm import DM
from teachers.rp import RP, LearnablePowerFeature, RPExtra, RPSmall
from teachers.rules import AdamRule, MomentumRule, SGDRule

__all__ = [
    "DM",
    "RP",
    "AdamRule",
    "LSTMStack",
    "LearnablePowerFeature",
    "MomentumRule",
    "RPExtra",
    "RPSmall",
    "SGDRule",
    "Teacher",
    "build_teacher",
    "detach_state",
    "register_teacher",
]
