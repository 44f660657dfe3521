"""The suite file's pydantic models and the spec pieces stage kinds share.

``suite``: the suite, the stage base, optimizer entries, loading with errors that name the YAML path;
``specs``: names, labels, optimizee specs and horizons (light: no torch). Import from the module itself.
"""
