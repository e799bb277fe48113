"""The two databases: the index (inputs) and the products (outputs). All SQL lives here.

The only way to a store is the factory below: ``open_index(cfg)`` / ``open_products(cfg)``
(or the ``_at`` variants for an explicit path or URI). A ``postgresql://`` or
``postgres://`` value selects the PostgreSQL backend (``db/postgres``, imported only
then); anything else is a SQLite file (``db/sqlite``). A backend subpackage exports
``open_index(target, *, readonly)`` and ``open_products(target, *, readonly)``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dsa110_ingest.db.records import FILE_COLUMNS, MS_COLUMNS
from dsa110_ingest.db.store import IndexStore, ProductsStore
from dsa110_ingest.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "FILE_COLUMNS",
    "MS_COLUMNS",
    "IndexStore",
    "ProductsStore",
    "backend_of",
    "index_exists",
    "open_index",
    "open_index_at",
    "open_products",
    "open_products_at",
]

Target = str | os.PathLike[str]

_URI_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql"}
# backend name -> its subpackage below db/
_MODULES = {"sqlite": "sqlite", "postgresql": "postgres"}
_EXTRA = {"postgresql": "dsa110-ingest[postgresql]"}


class _DbConfig(Protocol):
    @property
    def hdf5_db(self) -> Target: ...
    @property
    def products_db(self) -> Target: ...


def backend_of(target: Target) -> str:
    """``"postgresql"`` for a libpq URI, ``"sqlite"`` for anything else (a file path)."""
    scheme = str(target).split("://", 1)[0].lower() if "://" in str(target) else ""
    return _URI_SCHEMES.get(scheme, "sqlite")


def _backend(target: Target) -> ModuleType:
    name = backend_of(target)
    try:
        return importlib.import_module(f"dsa110_ingest.db.{_MODULES[name]}")
    except ImportError as e:
        extra = _EXTRA.get(name)
        if extra is None:
            raise
        raise ConfigError(
            f"the database {_redact(target)} needs the {name} driver, which is not "
            f"installed ({e}); install it with `pip install '{extra}'`"
        ) from None


def _redact(target: Target) -> str:
    """A URI without its password, for messages."""
    s = str(target)
    if "://" not in s or "@" not in s:
        return s
    head, rest = s.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{head}://{cred.split(':', 1)[0]}@{host}"


def open_index_at(target: Target, *, readonly: bool = False) -> IndexStore:
    """The index store at a path or URI, created and migrated unless ``readonly``."""
    store: IndexStore = _backend(target).open_index(_normal(target), readonly=readonly)
    return store


def open_products_at(target: Target, *, readonly: bool = False) -> ProductsStore:
    """The products store at a path or URI, created and migrated unless ``readonly``."""
    store: ProductsStore = _backend(target).open_products(_normal(target), readonly=readonly)
    return store


def open_index(cfg: _DbConfig, *, readonly: bool = False) -> IndexStore:
    """The configured index store (``hdf5_db``)."""
    return open_index_at(cfg.hdf5_db, readonly=readonly)


def open_products(cfg: _DbConfig, *, readonly: bool = False) -> ProductsStore:
    """The configured products store (``products_db``)."""
    return open_products_at(cfg.products_db, readonly=readonly)


def index_exists(cfg: _DbConfig) -> bool:
    """Whether the index can be opened read-only (a server database always counts as
    existing; a SQLite file must be there)."""
    target = cfg.hdf5_db
    return backend_of(target) != "sqlite" or Path(target).exists()


def _normal(target: Target) -> str | Path:
    return str(target) if backend_of(target) != "sqlite" else Path(target)
