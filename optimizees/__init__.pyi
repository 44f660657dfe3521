# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .autoencoder import Autoencoder
from .base import Batch, Optimizee
from .cnn import CNNClassifier
from .data import DatasetUnavailableError, load_dataset
from .mlp import LogisticRegression, MLPClassifier
from .quadratic import QuadraticCos
from .sequence import CharLM

__all__ = [
    "Autoencoder",
    "Batch",
    "CharLM",
    "CNNClassifier",
    "DatasetUnavailableError",
    "LogisticRegression",
    "MLPClassifier",
    "Optimizee",
    "QuadraticCos",
    "load_dataset",
]
