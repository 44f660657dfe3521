"""The MLflow store: its URI, its creation and schema migration, experiments, and the checks that let
read-only commands open a store without writing to it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.stages.outputs import TAG
from harness.tracking.client import ResilientClient
from harness.tracking.delivery.queue import quick_http_retries, remember_workdir, set_spool_root


class StoreError(ValueError):
    """A tracking store that cannot be read as asked (not an MLflow store, unreachable, ...)."""


DEFAULT_DB = "mlflow.db"


def default_tracking_uri(workdir: str | Path = ".") -> str:
    """``sqlite:///<absolute path>/mlflow.db`` (MLflow 3 refuses the plain file store)."""
    return f"sqlite:///{(Path(workdir).resolve() / DEFAULT_DB)}"


def resolve_tracking_uri(uri: str | None, workdir: str | Path | None = None) -> str:
    """The URI to use: explicit > ``MLFLOW_TRACKING_URI`` > the default SQLite file.

    A relative ``sqlite:///`` path is made absolute so Ray workers in other directories agree. With a
    ``workdir``, tracking writes to this URI that cannot be delivered are journalled under
    ``<workdir>/tracking-spool`` (see :mod:`harness.tracking.delivery.spool`).
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(workdir or ".")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        uri = f"sqlite:///{Path(rel).resolve()}"
    elif "://" not in uri:
        raise ValueError(
            f"tracking URI {uri!r} is not a URI; use sqlite:///<path>/mlflow.db or http://host:5000 "
            "(MLflow 3 no longer supports a plain directory store)"
        )
    if workdir is not None:
        remember_workdir(uri, workdir)
    return uri


def init_tracking(uri: str, spool_dir: str | Path | None = None) -> MlflowClient:
    """Point MLflow at ``uri`` (create the SQLite DB now, in the driver, before trials start).

    One call checks the store answers; it raises when it does not (nothing has started yet). The client
    returned is a :class:`ResilientClient`: from then on, its calls wait through outages. ``spool_dir``
    is where undelivered writes are journalled (default: ``<workdir>/tracking-spool`` of the workdir
    given to :func:`resolve_tracking_uri`).
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if spool_dir is not None:
        set_spool_root(uri, spool_dir)
    # every call goes through an MlflowClient bound to ``uri``; mlflow.set_tracking_uri is not used because
    # it exports MLFLOW_TRACKING_URI, which would then override the next command's own choice in-process
    if not uri.startswith("sqlite:///"):
        quick_http_retries(uri)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
        return cast(MlflowClient, ResilientClient(uri, client))
    db = Path(uri[len("sqlite:///") :])
    if db.exists() and (not db.is_file() or db.stat().st_size > 0):
        check_sqlite_store(db, complete=False)  # never turn someone else's database into an MLflow store
    db.parent.mkdir(parents=True, exist_ok=True)
    # creating and migrating a new store is serialized: two suites started at once on a fresh store
    # would otherwise race in MLflow's schema migration ("duplicate column name")
    with _file_lock(db.with_name(db.name + ".lock")):
        fresh = not db.exists() or db.stat().st_size == 0
        try:
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)  # runs the schema migrations once, here
        except Exception as err:  # noqa: BLE001 - sqlite, SQLAlchemy and MLflow each wrap the cause
            why = _sqlite_failure(err)
            if why is None:
                raise
            if fresh:  # a store half-created on a full disk would be refused as foreign next time
                db.unlink(missing_ok=True)
            raise StoreError(
                f"cannot {'create' if fresh else 'open'} the MLflow store {db}: {why}"
                + ("; free space on its disk or pass --tracking-uri" if "full" in why else "")
                + ("; nothing was left behind" if fresh else "")
            ) from None
    return cast(MlflowClient, ResilientClient(uri, client))


def _sqlite_failure(err: BaseException) -> str | None:
    """The SQLite message at the root of ``err`` (``database or disk is full``, ``disk I/O error``, ...), or
    None when SQLite is not what failed."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, sqlite3.Error):
            return str(cur).splitlines()[0][:200]
        orig = getattr(cur, "orig", None)  # SQLAlchemy's DBAPIError keeps the driver's error here
        cur = orig if isinstance(orig, BaseException) else (cur.__cause__ or cur.__context__)
    text = str(err)
    for known in (
        "database or disk is full",
        "disk I/O error",
        "unable to open database file",
        "readonly database",
    ):
        if known in text:
            return known
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing) for the ``with`` block."""
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def artifact_root_for(uri: str) -> str | None:
    """Artifacts beside a SQLite DB (``<dir>/mlartifacts``); servers choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (tagged as ours) when missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root_for(uri)
    try:
        return client.create_experiment(
            name, artifact_location=f"{root}/{name}" if root else None, tags={f"{TAG}.suite": name}
        )
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # another driver created it just now
        if exp is None:
            raise
        return exp.experiment_id


_SQLITE_MAGIC = b"SQLite format 3\x00"


def mlflow_tables(complete: bool = True) -> set[str]:
    """The tables of an MLflow store (MLflow's own ORM lists): every table of this version (``complete``;
    with any missing, opening the file with MLflow creates them), or those of its first schema, which any
    MLflow store has (an older store MLflow may migrate)."""
    import mlflow.store.db.utils  # noqa: F401 - registers every ORM model on Base
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    return set((Base if complete else InitialBase).metadata.tables)


def check_sqlite_store(path: Path, complete: bool = True) -> None:
    """Refuse a path that is not an existing MLflow SQLite store (``complete``: with every table of this MLflow
    version, so opening it writes nothing), reading it only."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not an MLflow SQLite database")
    if not path.exists():
        raise StoreError(f"no MLflow database at {path}; run a suite first or pass --tracking-uri")
    if not path.is_file():
        raise StoreError(f"{path} is not a regular file, so not an MLflow SQLite database")
    with path.open("rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise StoreError(f"{path} is not an SQLite database, so not an MLflow store")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = (
                con.execute("SELECT version_num FROM alembic_version").fetchall()
                if ("alembic_version" in names)
                else []
            )
        finally:
            con.close()
    except sqlite3.Error as err:
        raise StoreError(f"{path} is not a readable SQLite database: {err}") from None
    missing = sorted(mlflow_tables(complete) - names)
    if missing or len(version) != 1:
        what = (
            f"no {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} table"
            if missing
            else ("no schema version")
        )
        raise StoreError(
            f"{path} is an SQLite database but not a complete MLflow store ({what}); it is left untouched"
        )


@contextlib.contextmanager
def read_only_store(tracking_uri: str | None, workdir: Path) -> Iterator[tuple[str, MlflowClient]]:
    """The URI and a client of an existing store, for commands that only read it: a SQLite file must
    already be an MLflow store (nothing is created), a server gets one try of at most 5 s."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    try:
        uri = resolve_tracking_uri(tracking_uri, workdir)
        if uri.startswith("sqlite:///"):
            check_sqlite_store(Path(uri[len("sqlite:///") :]))
        try:
            client = init_tracking(uri)
        except Exception as err:  # noqa: BLE001 - an unreachable or broken store, whatever MLflow raises
            raise StoreError(
                f"cannot read the MLflow store at {uri}: {' '.join(str(err).split())[:500]}"
            ) from err
        yield uri, client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
