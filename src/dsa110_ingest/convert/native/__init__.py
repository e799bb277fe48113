"""The native backend: a Measurement Set written straight from the UVH5 files, one subband at
a time, with python-casacore.

The group's metadata (rows, UVWs after phasing, phase centres, subtables) is planned once
from the headers; the visibilities then stream through one row block at a time, so memory
is bounded by a block plus the per-group metadata, whatever the number of subbands.
Entry points: ``dsa110_ingest.convert.native.backend.convert`` and ``validate_ms``.
See docs/architecture.md ("The native MS writer").
"""
