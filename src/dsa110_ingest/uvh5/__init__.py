"""UVH5 files read with h5py: the header the index needs, and the rule that a file may
not link or store data outside itself.

- :mod:`.header`   ``read_header``: the index metadata of one file (``HeaderInfo``);
- :mod:`.fields`   typed reads of one header field each;
- :mod:`.pointing` the phase centre, or a drift scan's RA/Dec;
- :mod:`.node`     bounded reads through h5py's low-level API;
- :mod:`.safety`   links and external storage, found without being followed;
- :mod:`.opening`  opening a file, and its OSError as a typed error.
"""

from dsa110_ingest.uvh5.header import HeaderInfo, read_header
from dsa110_ingest.uvh5.opening import open_error
from dsa110_ingest.uvh5.pointing import gmst_rad
from dsa110_ingest.uvh5.safety import assert_self_contained, refuse_unsafe_inputs

__all__ = [
    "HeaderInfo",
    "assert_self_contained",
    "gmst_rad",
    "open_error",
    "read_header",
    "refuse_unsafe_inputs",
]
