"""Reports of a suite's results, read from MLflow records (never the Tune folders).

``leaderboard`` (ranked tables per task), ``stats`` (paired per-seed comparisons with bootstrap CIs),
``across`` (scores across tasks: speedup over tuned Adam, time to target, performance profiles), ``plots``
(loss curves, performance profile) and ``html`` (``sl2o report``, the self-contained HTML page).
"""
