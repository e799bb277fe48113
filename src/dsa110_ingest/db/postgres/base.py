"""What both PostgreSQL stores share: the connection, its loss, statements, transactions."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dsa110_ingest.db.postgres.connection import connect, describe, psycopg_module, translate
from dsa110_ingest.db.postgres.schema import PgMigration, check_store, migrate
from dsa110_ingest.errors import SchemaMissingError

_WHAT = {"index": "an index", "products": "a products"}


class PgConnection:
    """One autocommit connection of a store, opened again when lost between
    transactions (a server restart, a network cut): the loss itself is reported as busy,
    which the callers that retry busy writes retry."""

    def __init__(
        self, uri: str, store: str, migrations: Sequence[PgMigration], *, readonly: bool
    ) -> None:
        self.uri = uri
        self.name = describe(uri)
        self.readonly = readonly
        self._pg = psycopg_module()
        self.conn = connect(uri, readonly=readonly)
        self._in_tx = False
        self._pipeline: Any = None
        try:
            if readonly:
                if check_store(self.conn, store, self.name) == 0:
                    raise SchemaMissingError(
                        f"database {self.name} has no {store} schema yet; run the daemon or "
                        "`dsa110-ingest index-hdf5` first"
                    )
            else:
                migrate(self.conn, store, migrations, self.name)
        except self._pg.Error as e:
            self.conn.close()
            raise translate(e, self.name, "opening") from None
        except BaseException:
            self.conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def reconnected(self) -> None:
        """Called after the connection was opened again (session state to restore)."""

    def live(self) -> Any:
        if not self.conn.closed and not self.conn.broken:
            return self.conn
        if self._in_tx:
            raise translate(
                self._pg.OperationalError("the connection was lost"), self.name, "a transaction"
            )
        self.conn = connect(self.uri, readonly=self.readonly)
        self.reconnected()
        return self.conn

    def x(self, sql: str, args: Any = None) -> Any:
        """Send a statement. Inside a transaction it is pipelined: it goes out at once
        but nobody waits for it until a later statement's rows (or ``count``) are read,
        so a run of writes costs one round trip. The server still runs the statements
        one after another, each with its own snapshot."""
        return self.run(lambda: self.live().execute(sql, args), _doing(sql))

    def all(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        return self.run(lambda: list(self.live().execute(sql, args).fetchall()), _doing(sql))

    def first(self, sql: str, args: Any = None) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.run(
            lambda: self.live().execute(sql, args).fetchone(), _doing(sql)
        )
        return row

    def value(self, sql: str, args: Any = None) -> Any:
        row = self.first(sql, args)
        return None if row is None else row[0]

    def count(self, sql: str, args: Any = None) -> int:
        """Run a write and return the rows it changed (waits for it, pipeline or not)."""

        def go() -> int:
            cur = self.live().execute(sql, args)
            if self._pipeline is not None:
                self._pipeline.sync()  # the row count arrives with the result
            return max(0, int(cur.rowcount))

        return int(self.run(go, _doing(sql)))

    def executemany(self, sql: str, params: Sequence[Any], doing: str) -> int:
        """Run ``sql`` once per parameter set (pipelined by psycopg: one round trip, not
        one each); returns the rows affected in all."""

        def go() -> int:
            cur = self.live().cursor()
            cur.executemany(sql, params)
            if self._pipeline is not None:
                self._pipeline.sync()
            return max(0, int(cur.rowcount))

        return int(self.run(go, doing))

    def run(self, call: Callable[[], Any], doing: str) -> Any:
        """``call()`` with the driver's errors in the project's terms."""
        try:
            return call()
        except self._pg.Error as e:
            raise translate(e, self.name, doing) from None

    @contextmanager
    def transaction(self, doing: str) -> Iterator[None]:
        conn = self.live()
        self._in_tx = True
        try:
            # BEGIN, the writes and COMMIT ride along with the reads that need answers
            with conn.pipeline() as pipeline, conn.transaction():
                self._pipeline = pipeline
                yield
        except self._pg.Error as e:
            raise translate(e, self.name, doing) from None
        finally:
            self._pipeline = None
            self._in_tx = False

    @property
    def in_transaction(self) -> bool:
        return self._in_tx


def _doing(sql: str) -> str:
    """A statement's verb and table, for messages ("update groups")."""
    words = sql.replace("(", " ").split()
    verb = words[0].lower() if words else "a statement"
    table = next(
        (w for w in words[1:7] if w.isidentifier() and w.islower() and w not in _NOISE), ""
    )
    return f"{verb} {table}".strip()


_NOISE = {"into", "from", "pg_advisory_xact_lock", "pg_notify", "k", "unnest"}
