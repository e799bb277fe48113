"""Phase centres, LSTs and UVWs with ERFA and numpy, once per integration.

The same computation as pyuvdata's ``UVData.phase(..., use_ant_pos=True)`` with its default
``astrometry_library="erfa"`` (``utils.phasing.calc_app_coords``, ``calc_frame_pos_angle``,
``calc_uvw`` and ``utils.times.get_lst_for_time``), without astropy: pyuvdata spends
seconds per conversion building astropy ``Time``/``EarthLocation`` objects and parsing
the IERS tables; here the Earth orientation (UT1 - UTC, polar motion) of the few
integrations of a group is read straight from the same bundled IERS files and
interpolated the way astropy's ``IERS_Auto`` does. Agreement with pyuvdata is checked in
tests/convert/test_native_astrometry.py (UVWs to micrometres).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from dsa110_ingest.errors import TransientConversionError

log = structlog.get_logger("dsa110_ingest.convert")

MJD_ZERO = 2400000.5
ARCSEC = math.pi / (180.0 * 3600.0)
# pyuvdata's offset for the position angle of the frame (calc_frame_pos_angle)
_PA_OFFSET = math.pi / 360.0


def _erfa():  # type: ignore[no-untyped-def]
    try:
        import erfa
    except ImportError as e:
        raise TransientConversionError(
            "the native writer needs pyerfa (the extra 'convert'): "
            "pip install 'dsa110-ingest[convert]'"
        ) from e
    return erfa


# -- Earth orientation ----------------------------------------------------------------------
def _iers_files() -> tuple[Path, Path]:
    try:
        import astropy_iers_data
    except ImportError as e:
        raise TransientConversionError(
            "the native writer needs the IERS tables of astropy-iers-data (installed with "
            "the extra 'convert'): pip install 'dsa110-ingest[convert]'"
        ) from e
    return Path(astropy_iers_data.IERS_A_FILE), Path(astropy_iers_data.IERS_B_FILE)


@functools.cache
def _iers_lines() -> tuple[list[str], list[str]]:
    """The lines of finals2000A (one a day) and of the C04 series (one a day after its
    header), read once per process."""
    a_file, b_file = _iers_files()
    a_lines = a_file.read_text().splitlines()
    with b_file.open() as fh:
        b_lines = [ln for ln in fh if ln[:1].isdigit()]
    return a_lines, b_lines


def _float(s: str) -> float:
    s = s.strip()
    return float(s) if s else math.nan


@dataclass(frozen=True)
class EarthOrientation:
    """Daily UT1 - UTC (s) and polar motion (arcsec) at 0h UTC of ``mjd``."""

    mjd: np.ndarray
    ut1_utc: np.ndarray
    pm_x: np.ndarray
    pm_y: np.ndarray


def earth_orientation_days(first_mjd: int, last_mjd: int) -> EarthOrientation:
    """The table astropy's ``IERS_Auto`` builds, for days ``first_mjd..last_mjd``.

    As astropy: finals2000A (IERS-A) rows, each value from IERS-B where it has one (the
    C04 series, which replaces the B columns of finals2000A over its span), else from
    the finals2000A B columns, else its A (predicted) columns. Days outside the files
    take the nearest tabulated day, as astropy does at the ends of its table.
    """
    a_lines, b_lines = _iers_lines()
    a0 = int(float(a_lines[0][7:15]))
    rows = []
    for mjd in range(first_mjd, last_mjd + 1):
        k = min(max(mjd - a0, 0), len(a_lines) - 1)
        line = a_lines[k].ljust(185)
        while k > 0 and (not line[58:68].strip() or not line[16].strip()):
            k -= 1  # the future rows at the end hold dates only: use the last predicted
            line = a_lines[k].ljust(185)
        if a0 + k != mjd:
            log.warning(
                "convert.iers_out_of_range",
                mjd=mjd,
                table_mjd=a0 + k,
                hint="the IERS tables of astropy-iers-data do not cover this date; UVWs "
                "use the nearest day's Earth orientation (mm-level errors): "
                "pip install -U astropy-iers-data",
            )
        ut1, pmx, pmy = _float(line[154:165]), _float(line[134:144]), _float(line[144:154])
        if not math.isfinite(ut1):
            ut1 = _float(line[58:68])
        if not (math.isfinite(pmx) and math.isfinite(pmy)):
            pmx, pmy = _float(line[18:27]), _float(line[37:46])
        rows.append([float(a0 + k), ut1, pmx, pmy, not math.isnan(_float(line[154:165]))])
    table = np.array(rows, dtype=np.float64)
    has_b = table[:, 4].astype(bool)
    if has_b.any():
        lines = b_lines
        b0 = int(float(lines[0].split()[4]))
        for i in np.flatnonzero(has_b):
            k = int(table[i, 0]) - b0
            if 0 <= k < len(lines):
                f = lines[k].split()
                table[i, 1:4] = float(f[7]), float(f[5]), float(f[6])
    return EarthOrientation(table[:, 0], table[:, 1], table[:, 2], table[:, 3])


def earth_orientation(jd1: np.ndarray, jd2: np.ndarray) -> tuple[np.ndarray, ...]:
    """UT1 - UTC (s) and polar motion x, y (rad) at UTC ``jd1 + jd2``, interpolated
    linearly between days as astropy's ``IERS._interpolate`` (leap-second jumps of UT1 -
    UTC removed from the difference)."""
    mjd_full = (np.asarray(jd1) - MJD_ZERO) + np.asarray(jd2)
    day = np.floor(mjd_full)
    frac = mjd_full - day
    lo, hi = int(day.min()), int(day.max()) + 1
    eo = earth_orientation_days(lo, hi)
    i0 = (day - lo).astype(np.int64)
    i1 = i0 + 1
    span = eo.mjd[i1] - eo.mjd[i0]
    span = np.where(span == 0, 1.0, span)
    t = (day - eo.mjd[i0] + frac) / span
    out = []
    for col in (eo.ut1_utc, eo.pm_x, eo.pm_y):
        d = col[i1] - col[i0]
        if col is eo.ut1_utc:
            d = d - np.round(d)
        out.append(col[i0] + t * d)
    dut1, pmx, pmy = out
    return dut1, pmx * ARCSEC, pmy * ARCSEC


# -- time scales ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Times:
    """UTC instants in the scales ERFA wants, as astropy's ``Time`` splits them."""

    utc1: np.ndarray
    utc2: np.ndarray
    tt1: np.ndarray
    tt2: np.ndarray
    ut11: np.ndarray
    ut12: np.ndarray
    dut1: np.ndarray
    pm_x: np.ndarray  # rad
    pm_y: np.ndarray  # rad

    @classmethod
    def from_jd(cls, jd_utc: np.ndarray) -> Times:
        erfa = _erfa()
        jd = np.atleast_1d(np.asarray(jd_utc, dtype=np.float64))
        utc1 = np.round(jd)
        utc2 = jd - utc1
        dut1, pmx, pmy = earth_orientation(utc1, utc2)
        tai1, tai2 = erfa.utctai(utc1, utc2)
        tt1, tt2 = erfa.taitt(tai1, tai2)
        ut11, ut12 = erfa.utcut1(utc1, utc2, dut1)
        return cls(utc1, utc2, tt1, tt2, ut11, ut12, dut1, pmx, pmy)


@dataclass(frozen=True)
class Site:
    lat: float  # geodetic, rad
    lon: float  # rad
    height: float  # m
    xyz: np.ndarray  # ITRF, m

    @classmethod
    def from_geodetic(cls, lat_deg: float, lon_deg: float, alt_m: float) -> Site:
        """As astropy's ``EarthLocation.from_geodetic`` (WGS84) and back."""
        erfa = _erfa()
        xyz = np.asarray(
            erfa.gd2gc(1, math.radians(lon_deg), math.radians(lat_deg), alt_m), np.float64
        )
        return cls.from_xyz(xyz)

    @classmethod
    def from_xyz(cls, xyz: np.ndarray) -> Site:
        """Geodetic (WGS84) coordinates of an ITRF position, as astropy's ``EarthLocation``."""
        lon, lat, height = _erfa().gc2gd(1, xyz)
        return cls(float(lat), float(lon), float(height), np.asarray(xyz, np.float64))


def lst(times: Times, site: Site) -> np.ndarray:
    """Apparent local sidereal time (rad): pyuvdata's ``get_lst_for_time`` with ERFA."""
    erfa = _erfa()
    gast = erfa.gst06a(times.ut11, times.ut12, times.tt1, times.tt2)
    sp = erfa.sp00(times.tt1, times.tt2)
    return np.mod(gast + sp + site.lon, 2.0 * np.pi)


def icrs_to_app(ra: float, dec: float, times: Times, site: Site) -> tuple[np.ndarray, ...]:
    """Topocentric apparent (ra, dec) of an ICRS position (pyuvdata's ERFA path)."""
    erfa = _erfa()
    n = times.utc1.size
    _, _, _, app_dec, app_ra, eo = erfa.atco13(
        np.full(n, ra), np.full(n, dec), 0.0, 0.0, 0.0, 0.0,
        times.utc1, times.utc2, times.dut1, site.lon, site.lat, site.height,
        times.pm_x, times.pm_y, 0.0, 0.0, 0.0, 0.0,
    )  # fmt: skip
    return np.mod(app_ra - eo, 2.0 * np.pi), app_dec


def app_to_icrs(
    app_ra: np.ndarray, app_dec: np.ndarray, times: Times, site: Site
) -> tuple[np.ndarray, np.ndarray]:
    """The inverse (pyuvdata's ``transform_app_to_icrs``, ERFA path)."""
    erfa = _erfa()
    bpn = erfa.pnm06a(times.tt1, times.tt2)
    x, y = erfa.bpn2xy(bpn)
    s = erfa.s06(times.tt1, times.tt2, x, y)
    eo = erfa.eors(bpn, s)
    return erfa.atoc13(
        "r", app_ra + eo, app_dec, times.utc1, times.utc2, times.dut1,
        site.lon, site.lat, site.height, times.pm_x, times.pm_y, 0.0, 0.0, 0.0, 0.0,
    )  # fmt: skip


def frame_pos_angle(
    app_ra: np.ndarray, app_dec: np.ndarray, times: Times, site: Site
) -> np.ndarray:
    """Position angle of ICRS north in the apparent frame (``calc_frame_pos_angle``):
    the angle between two points half a degree south and north of the centre."""
    erfa = _erfa()
    up_dec, dn_dec = app_dec + _PA_OFFSET, app_dec - _PA_OFFSET
    up_ra, dn_ra = np.array(app_ra, dtype=np.float64), np.array(app_ra, dtype=np.float64)
    over = up_dec > np.pi / 2
    up_ra[over] = np.mod(up_ra[over] + np.pi, 2 * np.pi)
    up_dec[over] = np.pi - up_dec[over]
    under = dn_dec < -np.pi / 2
    dn_ra[under] = np.mod(dn_ra[under] + np.pi, 2 * np.pi)
    dn_dec[under] = -np.pi - dn_dec[under]
    both = Times(*(np.tile(getattr(times, f), 2) for f in Times.__dataclass_fields__))
    ra, dec = app_to_icrs(
        np.concatenate((dn_ra, up_ra)), np.concatenate((dn_dec, up_dec)), both, site
    )
    n = app_ra.size
    return -erfa.pas(ra[:n], dec[:n], ra[n:], dec[n:])


def rotated_antennas(
    antpos: np.ndarray, gha: np.ndarray, dec: np.ndarray, pa: np.ndarray
) -> np.ndarray:
    """Antenna positions (n_ants, 3; ITRF relative to the site) in each integration's
    (w, u, v) frame: about z by the Greenwich hour angle, about y by the declination,
    about x by the frame's position angle (``calc_uvw`` with ``use_ant_pos=True``).
    Returns (n_times, n_ants, 3) as (u, v, w)."""
    cg, sg = np.cos(gha), np.sin(gha)
    cd, sd = np.cos(dec), np.sin(dec)
    cp, sp = np.cos(pa), np.sin(pa)
    x, y, z = antpos[:, 0], antpos[:, 1], antpos[:, 2]
    # z-rotation by gha
    x1 = np.outer(cg, x) - np.outer(sg, y)
    y1 = np.outer(sg, x) + np.outer(cg, y)
    z1 = np.broadcast_to(z, x1.shape)
    # y-rotation by dec
    x2 = cd[:, None] * x1 + sd[:, None] * z1
    z2 = -sd[:, None] * x1 + cd[:, None] * z1
    # x-rotation by pa
    y3 = cp[:, None] * y1 - sp[:, None] * z2
    z3 = sp[:, None] * y1 + cp[:, None] * z2
    return np.stack((y3, z3, x2), axis=-1)


@dataclass(frozen=True)
class Phasing:
    """Per integration: apparent centre, frame position angle, LST."""

    app_ra: np.ndarray
    app_dec: np.ndarray
    frame_pa: np.ndarray
    lst: np.ndarray


def phase_integrations(
    times_jd: np.ndarray, centre_ra: np.ndarray, centre_dec: np.ndarray, site: Site
) -> Phasing:
    """Apparent coordinates of ICRS centre ``i`` at time ``i`` (one per integration)."""
    times = Times.from_jd(times_jd)
    app_ra = np.empty(times_jd.size)
    app_dec = np.empty(times_jd.size)
    for ra in np.unique(centre_ra):
        for dec in np.unique(centre_dec[centre_ra == ra]):
            sel = np.flatnonzero((centre_ra == ra) & (centre_dec == dec))
            sub = Times(*(getattr(times, f)[sel] for f in Times.__dataclass_fields__))
            app_ra[sel], app_dec[sel] = icrs_to_app(float(ra), float(dec), sub, site)
    pa = frame_pos_angle(app_ra, app_dec, times, site)
    return Phasing(app_ra, app_dec, pa, lst(times, site))


def uvw(
    ph: Phasing,
    site: Site,
    antpos: np.ndarray,
    ant_index_1: np.ndarray,
    ant_index_2: np.ndarray,
    time_index: np.ndarray,
) -> np.ndarray:
    """UVW (m) of every row: antenna 2 minus antenna 1, rotated to its integration."""
    gha = (ph.lst - ph.app_ra) - site.lon
    rot = rotated_antennas(antpos, gha, ph.app_dec, ph.frame_pa)
    return rot[time_index, ant_index_2] - rot[time_index, ant_index_1]
