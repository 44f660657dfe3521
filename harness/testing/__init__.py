"""Fixtures for tests and benchmarks, standalone (they import nothing of ``harness``).

``local_cluster``: a real multi-node Ray cluster on loopback addresses
(:class:`~harness.testing.local_cluster.LocalCluster`); ``mlflow_server``: a local ``mlflow server`` with its
own store (:class:`~harness.testing.mlflow_server.MlflowServer`).
"""
