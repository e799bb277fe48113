"""Backups and consistency checks of a PostgreSQL store (``backup_to``, ``integrity``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsa110_ingest.db.postgres.connection import psycopg_module
from dsa110_ingest.db.postgres.schema import PgMigration, schema_version
from dsa110_ingest.errors import DatabaseError

DUMP_TIMEOUT_S = 3600.0


def dump_database(uri: str, name: str, dest: Path) -> None:
    """A consistent copy of the live database in ``pg_dump``'s custom format (restore
    with ``pg_restore``). The password travels in the environment, not the command line
    (which every local user can read)."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise DatabaseError(
            f"cannot back up {name}: pg_dump is not installed; install the PostgreSQL "
            "client (Debian: postgresql-client) or back the server up with its own tools"
        )
    conninfo = psycopg_module().conninfo
    params = conninfo.conninfo_to_dict(uri)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run(
            [
                pg_dump,
                "--format=custom",
                "--no-owner",
                f"--file={dest}",
                f"--dbname={conninfo.make_conninfo(**params)}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=DUMP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise DatabaseError(
            f"pg_dump of {name} ran past {DUMP_TIMEOUT_S:.0f} s; back the server up with "
            "its own tools (pg_basebackup)"
        ) from None
    if p.returncode != 0:
        raise DatabaseError(f"pg_dump of {name} into {dest} failed: {p.stderr.strip()}")


def integrity_report(
    conn: Any, name: str, tables: Sequence[str], migrations: Sequence[PgMigration]
) -> str:
    """``"ok"``, or what is wrong: schema version, missing tables, invalid indexes (an
    interrupted ``CREATE INDEX CONCURRENTLY``), and rows that fail the tables' checks."""
    psycopg = psycopg_module()
    problems: list[str] = []
    try:
        version = schema_version(conn)
        if version != len(migrations):
            problems.append(f"schema version {version}, expected {len(migrations)}")
        have = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        if missing := sorted(set(tables) - have):
            problems.append(f"missing tables: {', '.join(missing)}")
        for (index,) in conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND NOT (i.indisvalid AND i.indisready)"
        ).fetchall():
            problems.append(f"index {index} is invalid: REINDEX INDEX {index}")
        for table in sorted(set(tables) & have):
            # reads every row and every TOASTed value: a damaged page fails here
            conn.execute(f"SELECT COUNT(*), SUM(length(t::text)) FROM {table} t").fetchone()
    except psycopg.Error as e:
        problems.append(f"{type(e).__name__}: {str(e).strip()}")
    return "ok" if not problems else f"{name}: " + "; ".join(problems)
