"""Entry point of a header-reader process (started by :class:`~.reader.HeaderReader`).

A module of its own so that ``python -m`` does not execute ``reader`` a second time
beside the copy the package import already loaded.
"""

from __future__ import annotations

import sys

from dsa110_ingest.ingest.reader import worker_main

if __name__ == "__main__":
    raise SystemExit(worker_main(int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])))
