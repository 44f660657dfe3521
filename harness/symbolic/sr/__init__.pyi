# the facade's exports, loaded on first use by __init__.py (lazy_loader.attach_stub)
from .base import SRBackend, check_fit_inputs, finish_front
from .operon import OperonBackend
from .pysr import PySRBackend
from .settings import DEFAULT_OPERATORS, PAPER_OPERATORS, SRSettings
from .skeleton import LinearBackend, SkeletonBackend

__all__ = [
    "DEFAULT_OPERATORS",
    "PAPER_OPERATORS",
    "LinearBackend",
    "OperonBackend",
    "PySRBackend",
    "SRBackend",
    "SRSettings",
    "SkeletonBackend",
    "check_fit_inputs",
    "finish_front",
    "get_backend",
]

def get_backend(name: str) -> SRBackend: ...
