"""Stage kinds, pure (no Ray, no MLflow): ``base`` is the contract (:class:`~harness.stages.base.StageKind`),
``views`` what report hooks read of a finished stage, ``outputs`` artifact names, result keys and outcomes,
``problems`` and ``cost`` shared helpers; one sub-package per built-in kind (``meta_train``, ``collect``,
``distill``, ``meta_tune``, ``evaluate``), registered by ``kinds``.
"""
