"""Where a study lives: Optuna's RDB storage (SQLite or PostgreSQL) with heartbeats, its artifact folder,
the lock around creating a study's schema and the claim lock around asking for the next point.

Everything concurrent is Optuna's: an :class:`optuna.storages.RDBStorage` (a SQLite file by
default, PostgreSQL for many machines) with heartbeats and
:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` re-queueing a killed worker's
trial. The one addition is :class:`ClaimLock` around "is work left? → ask": without it two workers
finishing together both ask, and the grid sampler hands the second a point that is already running.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from archlab.checks import fail

HEARTBEAT_INTERVAL, GRACE_PERIOD, MAX_RETRY = 60, 120, 3


def shown(url: str) -> str:
    """A storage URL as it may be printed: its password hidden (``postgresql://user:***@host/db``)."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def storage_url(url: str, exists: bool = False) -> str:
    """``url`` checked before anything is created, with its driver named: ``sqlite:///FILE`` (the
    folder must exist; with ``exists``, the file too) or ``postgresql://...`` (psycopg 3 - the
    bare scheme means psycopg2 before SQLAlchemy 2.1 - or a ``postgresql+DRIVER`` that is installed)."""
    allowed = "allowed: sqlite:///FILE or postgresql://USER@HOST[:PORT]/DATABASE"
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        fail("storage", f"{shown(url)!r} is not a URL; {allowed}")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            path = Path(database)
            if not path.parent.is_dir():
                fail("storage", f"the folder of {database} does not exist; create it or give another sqlite:///FILE")
            if path.is_dir():
                fail("storage", f"{database} is a folder; give a file, sqlite:///FILE")
            if exists and not path.is_file():
                fail("storage", f"{database} does not exist (no study has been run there)")
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        module = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000"}.get(parsed.get_driver_name())
        if module is None or importlib.util.find_spec(module) is None:
            fail("storage", f"the PostgreSQL driver {parsed.get_driver_name()!r} is not supported or not installed; "
                             f"pip install 'psycopg[binary]' and use postgresql://...")
    else:
        fail("storage", f"{shown(url)!r} is invalid; {allowed}")
    return parsed.render_as_string(hide_password=False)


def make_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int | None = GRACE_PERIOD) -> RDBStorage:
    """An Optuna RDB storage with heartbeats; a stale trial is FAILed and re-queued (up to 3 times).

    SQLite gets a 60 s busy timeout so concurrent local workers wait instead of failing. A storage
    that cannot be opened raises ``ValueError`` with the database's message (password hidden).
    """
    url = storage_url(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                  max_retry=MAX_RETRY, inherit_intermediate_values=True))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        fail("storage", f"cannot open {shown(url)}: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    """The database's own message (the DBAPI error SQLAlchemy wraps), first line."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


@contextlib.contextmanager
def creation_lock(url: str):
    """Held while a worker creates the schema and the study: two workers starting at once on a new
    storage would both create Optuna's tables (``table ... already exists``, ``duplicate key ...
    studydirection``). A file lock beside a SQLite database, a PostgreSQL advisory lock otherwise."""
    url = storage_url(url)
    if url.startswith("sqlite"):
        database = sqlalchemy.engine.make_url(url).database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.claim-lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            key = int.from_bytes(hashlib.blake2b(b"archlab: optuna schema", digest_size=8).digest(), "big", signed=True)
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    except sqlalchemy.exc.OperationalError as exc:
        fail("storage", f"cannot open {shown(url)}: {_first_line(exc)}")
    finally:
        engine.dispose()


def artifacts_dir(url: str, artifacts: str | os.PathLike | None = None) -> Path:
    """Where trial artifacts go: ``artifacts``, else ``<db>-artifacts`` beside a SQLite file,
    else ``$ARCHLAB_ARTIFACTS`` or ``./archlab-artifacts``."""
    if artifacts:
        return Path(artifacts)
    database = sqlalchemy.engine.make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:":
        return Path(database).with_name(Path(database).stem + "-artifacts")
    return Path(os.environ.get("ARCHLAB_ARTIFACTS", "archlab-artifacts"))


class ClaimLock:
    """Serialises "is work left? → ask" across workers: a file lock beside a SQLite database,
    a PostgreSQL advisory lock otherwise. Both vanish with a killed process."""

    def __init__(self, url: str, name: str):
        self.file = self.engine = self.connection = None
        if url.startswith("sqlite"):
            database = sqlalchemy.engine.make_url(url).database
            if database and database != ":memory:":
                self.file = open(f"{database}.claim-lock", "a")
        else:
            self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self.key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)

    @contextlib.contextmanager
    def held(self):
        """Hold the lock; yields a ``release()`` to drop it early (idempotent)."""
        held = [True]
        if self.file:
            fcntl.flock(self.file, fcntl.LOCK_EX)
        elif self.connection is not None:
            self.connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})

        def release():
            if held[0]:
                held[0] = False
                if self.file:
                    fcntl.flock(self.file, fcntl.LOCK_UN)
                elif self.connection is not None:
                    self.connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})

        try:
            yield release
        finally:
            release()

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.connection is not None:
            self.connection.close()
            self.engine.dispose()
