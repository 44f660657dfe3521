"""The runner: a suite's stages run in order, each as one Ray Tune experiment, reused or resumed by key.

``runner`` (a suite), ``stage`` (one stage: plan, reuse, run, collect; with ``context`` and ``errors``),
``trainable`` (the one Tune trainable: any stage kind's trial), ``trials`` (trial keys, tags, resources),
``search`` (searches and schedulers), ``stagekey`` (content-addressed stage keys) and ``progress`` (lines).
"""
