"""dsa110-ingest: the ingest daemon of the DSA-110 continuum-imaging pipeline."""

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
from dsa110_ingest.db.hdf5 import SubbandGroup
from dsa110_ingest.logs import library_default

library_default()  # a library prints nothing of its own; the CLI sets up logging

__version__ = "0.1.0"
__all__ = [
    "Config",
    "SubbandGroup",
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
