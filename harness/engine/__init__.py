"""The runner: a suite's stages run as a graph (each once its inputs are done), each as one Ray Tune
experiment, reused or resumed by key.

``runner`` (a suite), ``graphrun`` (its stages as a graph, one thread each), ``stage`` (one stage: plan, reuse, run, collect; with ``context`` and ``errors``),
``trainable`` (the one Tune trainable: any stage kind's trial), ``trials`` (trial keys, tags, resources),
``search`` (searches and schedulers), ``stagekey`` (content-addressed stage keys) and ``progress`` (lines).
"""
