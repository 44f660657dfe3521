"""Training pieces shared by stages and teachers, pure torch (no Ray, no MLflow).

``unroll`` (:func:`harness.training.unroll.unroll`, the truncated unrolled loop that teacher meta-training and
gradient meta-tuning share; not re-exported, so the name stays the module's), ``optimizers`` (an optimizer
config dict to a torch optimizer) and ``schedules`` (step-size schedules).
"""

from harness.training.optimizers import build_optimizer, optimizer_label
from harness.training.schedules import equation_schedule, lr_factor, lr_scheduler
from harness.training.unroll import loss_and_grads

__all__ = [
    "build_optimizer",
    "equation_schedule",
    "loss_and_grads",
    "lr_factor",
    "lr_scheduler",
    "optimizer_label",
]
