"""Opening PostgreSQL the same way for both stores, and its errors in the project's terms.

One psycopg connection per store, in autocommit mode: a statement outside
``transaction()`` is its own transaction (as a read outside ``BEGIN`` is in SQLite), and
``transaction()`` is one ``BEGIN ... COMMIT``. A connection lost to a server restart or a
network cut is reported as busy (retried by the callers that retry busy writes) and opened
again on next use.
"""

from __future__ import annotations

from typing import Any

from dsa110_ingest.errors import (
    ConfigError,
    DatabaseBusyError,
    DatabaseError,
    DatabaseReadOnlyError,
)

CONNECT_TIMEOUT_S = 10
# a statement waiting longer than this for a lock fails as busy (and is retried) instead of
# hanging a daemon behind another node's stuck transaction
LOCK_TIMEOUT_MS = 30_000
URI_SCHEMES = ("postgresql://", "postgres://")


def is_uri(value: object) -> bool:
    return isinstance(value, str) and value.startswith(URI_SCHEMES)


def psycopg_module() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "a postgresql:// database needs the PostgreSQL driver: install "
            "dsa110-ingest[postgresql] (pip install 'dsa110-ingest[postgresql]')"
        ) from None
    return psycopg


def describe(uri: str) -> str:
    """The URI as people may see it: without a password (or any other secret option)."""
    psycopg = psycopg_module()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(uri)
    except psycopg.ProgrammingError:
        return "postgresql://(an unparsable URI)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "")
    port = f":{parts['port']}" if parts.get("port") else ""
    db = parts.get("dbname", "")
    if host.startswith("/"):  # a unix socket folder
        return f"postgresql://{user}{port}/{db}?host={host}"
    return f"postgresql://{user}{host}{port}/{db}"


def translate(e: Exception, where: str, doing: str) -> DatabaseError:
    psycopg = psycopg_module()
    errors = psycopg.errors
    sqlstate = getattr(e, "sqlstate", None) or ""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(
        e,
        errors.SerializationFailure
        | errors.DeadlockDetected
        | errors.LockNotAvailable
        | errors.QueryCanceled,
    ):
        return DatabaseBusyError(
            f"database {where}: {first} while {doing}; it is retried. If this persists, "
            "look for a long transaction in pg_stat_activity"
        )
    if isinstance(e, errors.ReadOnlySqlTransaction | errors.InsufficientPrivilege):
        return DatabaseReadOnlyError(
            f"database {where} refused a write while {doing} ({first}); grant the "
            "daemon's role write access (docs/scale-out.md, roles) or use a writable server"
        )
    if isinstance(e, psycopg.OperationalError) and not sqlstate.startswith(("42", "22", "23")):
        return DatabaseBusyError(
            f"database {where} unreachable while {doing} ({first}); it is retried. Check "
            "that the server runs and the URI's host, port and database"
        )
    return DatabaseError(f"database {where}: {first} (while {doing})")


def connect(uri: str, *, readonly: bool = False, application: str = "dsa110-ingest") -> Any:
    """An autocommit connection; ``readonly``: every transaction is read-only."""
    psycopg = psycopg_module()
    options = f"-c lock_timeout={LOCK_TIMEOUT_MS}"
    if readonly:
        options += " -c default_transaction_read_only=on"
    try:
        return psycopg.connect(
            uri,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application,
            options=options,
        )
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatabaseError(
            f"cannot connect to {describe(uri)}: {first}; check that the server runs, "
            "the URI (host or socket folder, port, database, user) and pg_hba.conf"
        ) from None
