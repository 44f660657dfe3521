# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .base import Batch, Optimizee
from .cnn import CNNClassifier
from .data import DatasetUnavailableError, load_dataset
from .mlp import MLPClassifier
from .quadratic import QuadraticCos

__all__ = [
    "Batch",
    "CNNClassifier",
    "DatasetUnavailableError",
    "MLPClassifier",
    "Optimizee",
    "QuadraticCos",
    "load_dataset",
]
