"""The teacher interface: a coordinate-wise update rule over a flat vector of n coordinates.

A teacher reads the features of its ``feature_spec`` (:mod:`harness.features`) and returns the update
**added** to the parameters: ``update, state = teacher(feats, state)``, ``x_next = x + update`` (SGD's is
``-lr * g``). All coordinates go through one network in one batch; ``state`` is a plain ``dict[str, Tensor]``
that ``forward`` never mutates, so meta-training backpropagates through it and cuts it with
:func:`detach_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from harness.features import FeatureSpec, FeatureState
from harness.registry import TEACHERS

State = dict[str, Tensor]
T = TypeVar("T", bound="Teacher")


def detach_state(state: Mapping[str, Tensor]) -> State:
    """The same state cut from the autograd graph (truncated BPTT between unrolls)."""
    return {k: v.detach() for k, v in state.items()}


class Teacher(nn.Module):
    """Base class of numerical update rules (learned or hand-written).

    Subclasses set ``self.feature_spec`` and record their constructor arguments in ``self.kwargs``
    (plain Python values) so a checkpoint can rebuild them through the ``TEACHERS`` registry.
    """

    #: the registry name, set by :func:`register_teacher`
    name: ClassVar[str] = ""
    feature_spec: FeatureSpec

    def __init__(self) -> None:
        super().__init__()
        self.kwargs: dict[str, Any] = {}

    def init_state(self, n_coords: int, device: torch.device | str | None = None) -> State:
        """Initial recurrent state for ``n_coords`` coordinates (empty for stateless rules)."""
        return {}

    def forward(self, features: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        """``features [n, F]`` (columns in ``feature_spec.names`` order) -> ``(update [n], new state)``."""
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------------
    @property
    def learnable(self) -> bool:
        """Whether the teacher has trainable parameters (hand-written rules do not)."""
        return any(p.requires_grad for p in self.parameters())

    def new_feature_state(self, n_coords: int, device: torch.device | str | None = None) -> FeatureState:
        """A stateful feature computer for this teacher's inputs (no lag history)."""
        return FeatureState(self.feature_spec, n_coords, device=device, history=False)

    def input_features(self) -> FeatureSpec:
        """The features this teacher reads, as SR should record them (collect's default): its
        ``feature_spec``, except that a teacher computing a learnable feature itself (RP(extra)'s ``eta``)
        names that feature, with its current parameters, in place of the raw inputs it computes it from."""
        return self.feature_spec

    def column(self, features: Tensor, name: str) -> Tensor:
        """Feature ``name`` of a ``[n, F]`` feature tensor."""
        return features[:, self.feature_spec.index(name)]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())


def register_teacher(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: set ``cls.name`` and register ``cls`` in ``TEACHERS`` under ``name``."""

    def deco(cls: type[T]) -> type[T]:
        cls.name = name
        TEACHERS.register(name, cls)
        return cls

    return deco


def build_teacher(name: str, kwargs: Mapping[str, Any]) -> Teacher:
    """Instantiate the teacher registered as ``name`` with ``kwargs`` (through ``TEACHERS``), after checking
    ``kwargs`` against the teacher's kwargs model (:mod:`teachers.params`): sizes are bounded before any
    module is built, whoever gives them (a suite, a checkpoint)."""
    TEACHERS.check_kwargs(name, kwargs, f"teacher {name!r}")
    # the registry is typed for any callable; teacher entries are Teacher classes (see register_teacher)
    teacher: Teacher = TEACHERS.get(name)(**kwargs)
    return teacher


class LSTMStack(nn.Module):
    """Stacked ``nn.LSTMCell`` layers stepped one time step at a time; state keys ``h{i}``, ``c{i}``."""

    def __init__(self, input_size: int, hidden: int, layers: int) -> None:
        super().__init__()
        if layers < 1 or hidden < 1:
            raise ValueError(f"LSTM needs layers >= 1 and hidden >= 1, got {layers}, {hidden}")
        self.hidden = hidden
        self.cells = nn.ModuleList(
            nn.LSTMCell(input_size if i == 0 else hidden, hidden) for i in range(layers)
        )

    def init_state(self, n: int, device: torch.device | str | None = None) -> State:
        state: State = {}
        for i in range(len(self.cells)):
            state[f"h{i}"] = torch.zeros(n, self.hidden, device=device)
            state[f"c{i}"] = torch.zeros(n, self.hidden, device=device)
        return state

    def forward(self, x: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, State]:
        new: State = {}
        for i, cell in enumerate(self.cells):
            h, c = cell(x, (state[f"h{i}"], state[f"c{i}"]))
            new[f"h{i}"], new[f"c{i}"] = h, c
            x = h
        return x, new
