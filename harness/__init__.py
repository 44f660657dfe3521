"""symbolic-l2o harness: config, registries, features, symbolic core, stages, Ray/MLflow glue, CLI."""

__version__ = "0.1.0"
