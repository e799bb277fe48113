"""dsa110-ingest: the ingest daemon of the DSA-110 continuum-imaging pipeline.

The public functions are imported on first use, so that ``import dsa110_ingest`` (and
every command line start, ``--version`` and ``status`` included) does not pay for h5py
and the indexer until something needs them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from dsa110_ingest.logs import library_default

library_default()  # a library prints nothing of its own; the CLI sets up logging

try:
    # the one place the version is defined is pyproject.toml; this reads what pip installed
    __version__ = version("dsa110-ingest")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

_LAZY = {
    "ensure_hdf5_db": "dsa110_ingest.api",
    "ensure_products_db": "dsa110_ingest.api",
    "find_subband_groups_from_db": "dsa110_ingest.api",
    "get_group_count": "dsa110_ingest.api",
    "get_hdf5_db_path": "dsa110_ingest.api",
    "get_products_db_path": "dsa110_ingest.api",
    "index_hdf5_files": "dsa110_ingest.api",
    "is_group_complete": "dsa110_ingest.api",
    "Config": "dsa110_ingest.config",
    "load_config": "dsa110_ingest.config",
    "SubbandGroup": "dsa110_ingest.db.records",
}

__all__ = [
    "Config",
    "SubbandGroup",
    "__version__",
    "ensure_hdf5_db",
    "ensure_products_db",
    "find_subband_groups_from_db",
    "get_group_count",
    "get_hdf5_db_path",
    "get_products_db_path",
    "index_hdf5_files",
    "is_group_complete",
    "load_config",
]

if TYPE_CHECKING:
    from dsa110_ingest.api import (
        ensure_hdf5_db,
        ensure_products_db,
        find_subband_groups_from_db,
        get_group_count,
        get_hdf5_db_path,
        get_products_db_path,
        index_hdf5_files,
        is_group_complete,
    )
    from dsa110_ingest.config import Config, load_config
    from dsa110_ingest.db.records import SubbandGroup


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dsa110_ingest' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
