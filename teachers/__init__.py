"""Built-in teachers; importing this package registers them in ``harness.registry.TEACHERS``.

Learned (numerical L2O): ``dm``, ``rp``, ``rp_small``, ``rp_extra``. Hand-written: ``sgd``, ``momentum``,
``adam``. See :mod:`teachers.base` for the interface and the update sign convention. Each is registered by
``"module:Class"`` with its kwargs model (:mod:`teachers.params`), so validating a suite imports no torch;
the facade's names (``__init__.pyi``) load on first use.
"""

import lazy_loader

from harness.registry import TEACHERS
from teachers import params

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

for _name, _target, _params in (
    ("rp", "teachers.rp:RP", params.RPParams),
    ("rp_small", "teachers.rp:RPSmall", params.RPParams),
    ("rp_extra", "teachers.rp:RPExtra", params.RPParams),
    ("dm", "teachers.dm:DM", params.DMParams),
    ("sgd", "teachers.rules:SGDRule", params.SGDParams),
    ("momentum", "teachers.rules:MomentumRule", params.MomentumParams),
    ("adam", "teachers.rules:AdamRule", params.AdamParams),
):
    TEACHERS.register(_name, _target, params=_params)
