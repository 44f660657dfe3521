"""Built-in optimizees; importing this package registers them in ``harness.registry.OPTIMIZEES``.

Registered names: ``quadratic_cos`` (P1), ``mlp`` (ReLU MLP classifiers), ``cnn`` (torchvision CNNs on CIFAR
or offline digits32).
"""

from harness.registry import OPTIMIZEES
from optimizees.base import Batch, Optimizee
from optimizees.cnn import CNNClassifier
from optimizees.data import DatasetUnavailableError, load_dataset
from optimizees.mlp import MLPClassifier
from optimizees.quadratic import QuadraticCos

OPTIMIZEES.register("quadratic_cos", QuadraticCos)
OPTIMIZEES.register("mlp", MLPClassifier)
OPTIMIZEES.register("cnn", CNNClassifier)

__all__ = [
    "Batch",
    "CNNClassifier",
    "DatasetUnavailableError",
    "MLPClassifier",
    "Optimizee",
    "QuadraticCos",
    "load_dataset",
]
