# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .base import LSTMStack, Teacher, build_teacher, detach_state, register_teacher
from .dm import DM
from .rp import RP, LearnablePowerFeature, RPExtra, RPSmall
from .rules import AdamRule, MomentumRule, SGDRule

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
