"""pyuvdata + python-casacore: 16 UVH5 files -> one Measurement Set."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConversionError


def convert(req: ConversionRequest, tmp_output: Path) -> dict[str, Any]:
    try:
        from pyuvdata import UVData
    except ImportError as e:
        raise ConversionError(
            "backend 'pyuvdata' needs the extra 'convert': pip install 'dsa110-ingest[convert]'"
        ) from e
    files = [f.path for f in req.by_frequency]
    uv = UVData()
    with warnings.catch_warnings():
        # the files carry the site's location; pyuvdata's telescope lookup would go online
        warnings.simplefilter("ignore")
        uv.read(files, file_type="uvh5", axis="freq", run_check=True)
        if uv.phase_center_catalog and any(
            pc.get("cat_type") == "unprojected" for pc in uv.phase_center_catalog.values()
        ):
            mid = float((uv.time_array.min() + uv.time_array.max()) / 2.0)
            uv.phase_to_time(mid)
        uv.write_ms(str(tmp_output), clobber=False)
    freqs = uv.freq_array.reshape(-1)
    return {
        "n_channels": int(uv.Nfreqs),
        "n_rows": int(uv.Nblts),
        "freq_min_hz": float(freqs.min()),
        "freq_max_hz": float(freqs.max()),
    }


def validate_ms(path: Path, n_channels: int) -> str | None:
    """None when ``path`` is a readable MS with ``n_channels`` channels; else why not."""
    try:
        from casacore.tables import table
    except ImportError:
        return "python-casacore is not installed; cannot validate"
    try:
        with table(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
            nchan = int(sum(spw.getcol("NUM_CHAN")))
        with table(str(path), ack=False) as main:
            nrows = main.nrows()
    except Exception as e:  # noqa: BLE001 -- casacore raises bare RuntimeError for any damage
        return f"not a readable Measurement Set: {e}"
    if nchan != n_channels:
        return f"has {nchan} channels, expected {n_channels}"
    if nrows == 0:
        return "has no rows"
    return None
