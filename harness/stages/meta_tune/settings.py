"""A meta_tune stage's settings: the keyword parameters of :func:`~harness.stages.meta_tune.tune.meta_tune`
and of its two methods, read from their source (not imported: ``sl2o validate`` stays torch-free).
"""

from __future__ import annotations

from harness.stages.base import defaults_from_source, settings_fields, settings_model

#: keyword parameters of the three functions that are not settings (the trial and the stage give them)
NOT_SETTINGS = ("equation", "optimizee", "method", "seed", "device", "method_kwargs", "on_progress")
#: the three functions whose keyword parameters are a stage's settings, named so that their signatures are
#: read without importing them (torch): validating a suite stays torch-free
TUNE, GRADIENT, OPTUNA = (
    "harness.stages.meta_tune.tune:meta_tune",
    "harness.stages.meta_tune.gradient:meta_tune_gradient",
    "harness.stages.meta_tune.optuna_search:meta_tune_optuna",
)
#: settings each method takes (besides the ones :func:`meta_tune` itself takes)
METHOD_SETTINGS = {
    "gradient": tuple(settings_fields(GRADIENT, NOT_SETTINGS)),
    "optuna": tuple(settings_fields(OPTUNA, NOT_SETTINGS)),
}
#: the typed model of a meta_tune stage's ``settings:`` (the keyword parameters of the three functions)
MetaTuneSettings = settings_model(
    "MetaTuneSettings", TUNE, GRADIENT, OPTUNA, what="meta-tuning", exclude=NOT_SETTINGS
)
#: settings only the in-trial mode takes (Ray Tune keeps the study of ``search: tune``)
IN_TRIAL_ONLY = ("storage", "study_name")
#: the Optuna trials a study runs unless ``settings.n_trials`` says otherwise (``meta_tune_optuna``'s default)
OPTUNA_TRIALS_DEFAULT: int = defaults_from_source(OPTUNA)["n_trials"]
