"""Shared setup of the teacher tests.

Pytest puts ``tests/`` on ``sys.path`` (rootdir conftest, prepend import mode), where ``tests/teachers``
would shadow the editable-installed ``teachers`` package as a namespace package. The project-wide fix
is ``pythonpath = ["."]`` in the pytest config; the path fix below keeps these tests correct either way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path[:1]:
    sys.path.insert(0, ROOT)
_mod = sys.modules.get("teachers")
if _mod is not None and getattr(_mod, "__file__", None) is None:  # namespace package from tests/
    del sys.modules["teachers"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny problems: intra-op threads only add overhead (and oversubscribe shared CI cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
