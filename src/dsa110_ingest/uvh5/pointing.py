"""Where a file points: the phase centre from whichever convention the file uses, or a
drift scan's RA/Dec at mid time from the local sidereal time."""

from __future__ import annotations

import math

import numpy as np

from dsa110_ingest.errors import InvalidHeaderError
from dsa110_ingest.uvh5.fields import opt_float, text_field
from dsa110_ingest.uvh5.node import Node


def gmst_rad(jd: float) -> float:
    """Greenwich mean sidereal time (IAU 1982), good to ~0.1 s: enough for an index RA."""
    t = (jd - 2451545.0) / 36525.0
    gmst_s = (
        67310.54841 + (876600.0 * 3600.0 + 8640184.812866) * t + 0.093104 * t * t - 6.2e-6 * t**3
    )
    return math.radians((gmst_s % 86400.0) / 240.0)


def _lst_rad(header: Node, mid_jd: float, lon_deg: float, times: np.ndarray) -> float:
    if header.shape("lst_array") == times.shape:
        lst = header.read_number("lst_array", times.size)
        i = int(np.argmin(np.abs(times - mid_jd)))
        if math.isfinite(lst[i]):
            return float(lst[i])
    return (gmst_rad(mid_jd) + math.radians(lon_deg)) % (2 * math.pi)


def phase_centre(
    path: str, header: Node, mid_jd: float, lat: float, lon: float, times: np.ndarray
) -> tuple[str, float | None, float | None]:
    """(phase_type, ra_deg, dec_deg) from whichever convention the file uses."""
    cat = header.group("phase_center_catalog")
    ids = cat.children() if cat is not None else []
    if cat is not None and ids:
        entry = cat.group(sorted(ids, key=lambda k: int(k) if k.isdigit() else 0)[0])
        if entry is None:
            raise InvalidHeaderError(path, "phase_center_catalog entry is not a group")
        has_type = entry.shape("cat_type") is not None
        cat_type = text_field(path, entry, "cat_type") if has_type else "sidereal"
        if cat_type == "sidereal":
            lon_c = opt_float(entry, "cat_lon")
            lat_c = opt_float(entry, "cat_lat")
            if lon_c is not None and lat_c is not None:
                return cat_type, math.degrees(lon_c) % 360.0, math.degrees(lat_c)
        return cat_type, *_drift_radec(header, mid_jd, lat, lon, times)

    phase_type = (
        text_field(path, header, "phase_type")
        if header.shape("phase_type") is not None
        else "drift"
    )
    if phase_type == "phased":
        ra = opt_float(header, "phase_center_ra")
        dec = opt_float(header, "phase_center_dec")
        if ra is None or dec is None:
            raise InvalidHeaderError(
                path, "phase_type is 'phased' but phase_center_ra/dec are missing or not finite"
            )
        return phase_type, math.degrees(ra) % 360.0, math.degrees(dec)
    return phase_type, *_drift_radec(header, mid_jd, lat, lon, times)


def _drift_radec(
    header: Node, mid_jd: float, lat: float, lon: float, times: np.ndarray
) -> tuple[float, float]:
    """Pointing of a drift scan at mid time: DSA-110 keeps dec and HA in extra_keywords."""
    lst = _lst_rad(header, mid_jd, lon, times)
    ek = header.group("extra_keywords")
    dec_rad = ha_rad = None
    if ek is not None:
        dec_rad = opt_float(ek, "phase_center_dec")
        ha_rad = opt_float(ek, "ha_phase_center")
    ra = math.degrees((lst - (ha_rad or 0.0)) % (2 * math.pi))
    dec = math.degrees(dec_rad) if dec_rad is not None else lat
    return ra, dec
