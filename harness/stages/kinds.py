"""The built-in stage kinds, registered in :data:`harness.registry.STAGES` (imported lazily by it)."""

from harness.registry import STAGES
from harness.stages.collect.kind import CollectKind
from harness.stages.distill.kind import DistillKind
from harness.stages.evaluate.kind import EvaluateKind
from harness.stages.hpo.kind import HpoKind
from harness.stages.meta_train.kind import MetaTrainKind
from harness.stages.meta_tune.kind import MetaTuneKind

for _kind in (MetaTrainKind(), CollectKind(), DistillKind(), MetaTuneKind(), HpoKind(), EvaluateKind()):
    STAGES.register(_kind.name, _kind)
