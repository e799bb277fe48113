"""The index row of a file: what its name and its header say, as ``hdf5_file_index``
columns (the DB's public schema keeps its names; ``is_duplicate`` is a conflict)."""

from __future__ import annotations

from typing import Any

from dsa110_ingest.ingest.scanner import Candidate
from dsa110_ingest.times import unix_to_mjd
from dsa110_ingest.uvh5 import HeaderInfo


def file_row(
    cand: Candidate, header: HeaderInfo, gid: str, conflict: bool, now: float
) -> dict[str, Any]:
    assert cand.name is not None
    date, _, tod = cand.name.timestamp_iso.partition("T")
    return {
        "path": cand.path,
        "filename": cand.filename,
        "group_id": gid,
        "subband_code": cand.name.subband_code,
        "subband_num": cand.name.subband_num,
        "timestamp_iso": cand.name.timestamp_iso,
        "timestamp_mjd": unix_to_mjd(cand.name.timestamp_unix),
        "file_size_bytes": cand.size,
        "modified_time": cand.mtime_ns / 1e9,
        "indexed_at": now,
        "stored": 1,
        "ra_deg": header.ra_deg,
        "dec_deg": header.dec_deg,
        "obs_date": date,
        "obs_time": tod,
        "start_mjd": header.start_mjd,
        "end_mjd": header.end_mjd,
        "mid_mjd": header.mid_mjd,
        "freq_min_hz": header.freq_min_hz,
        "freq_max_hz": header.freq_max_hz,
        "channel_width_hz": header.channel_width_hz,
        "integration_time_s": header.integration_time_s,
        "n_freqs": header.n_freqs,
        "n_times": header.n_times,
        "n_ants": header.n_ants,
        "n_pols": header.n_pols,
        "n_blts": header.n_blts,
        "telescope_name": header.telescope_name,
        "storage_location_id": cand.location_id,
        "mtime_ns": cand.mtime_ns,
        "is_duplicate": int(conflict),
    }
