# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .labels import FAMILIES, optimizer_label
from .optimizers import build_optimizer
from .schedules import equation_schedule, lr_factor, lr_scheduler
from .unroll import loss_and_grads

__all__ = [
    "FAMILIES",
    "build_optimizer",
    "equation_schedule",
    "loss_and_grads",
    "lr_factor",
    "lr_scheduler",
    "optimizer_label",
]
