"""The hpo stage: tune an optimizer's hyperparameters on a target by an Optuna search over Ray Tune trials.

``space`` (an Optuna search space from ``search_spaces/baselines.yaml`` and the configs it proposes),
``objective`` (one proposal's figure: train on the tuning seeds with a validation split held out of the
training data), ``select`` (the stage's choice after the search) and ``kind`` (the stage kind). The same stage
tunes a baseline (Adam, SGD: learning rate, momentum or betas, weight decay, schedule, warm-up) and a symbolic
rule's global knobs (a step scale, schedule, warm-up), so a panel gives each method the same tuning budget.
"""
