"""What the files' headers decide for the recipe (convert/plan.py): each file's header
as the plan needs it, the pointing declination and the group's integration grid."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import h5py
import numpy as np
import structlog

from dsa110_ingest.errors import PermanentConversionError

log = structlog.get_logger("dsa110_ingest.convert")

SECONDS_PER_DAY = 86400.0
# two subbands "agree" on the pointing within this: far below any beam, far above
# float32 round-off of a radian value
DEC_AGREE_RAD = math.radians(1.0 / 3600.0)


@dataclass(frozen=True)
class FileHeader:
    path: str
    subband: int
    freq_hz: np.ndarray
    time_jd: np.ndarray  # per row
    ant1: np.ndarray
    ant2: np.ndarray
    integration_s: float
    pointing_dec_rad: float | None
    lat_deg: float
    lon_deg: float
    alt_m: float
    telescope_name: str
    pols: tuple[int, ...]
    # as stored (file channel order); read here so that writers need not reopen the file
    channel_width: np.ndarray | None = None
    spw_ids: np.ndarray | None = None  # Header/flex_spw_id_array, when the file has it


def read_file_header(path: str, subband: int) -> FileHeader:
    def bad(what: str) -> PermanentConversionError:
        return PermanentConversionError(
            f"sb{subband:02d} ({path}): {what}; the file cannot be converted as it is "
            "(replace it, or remove it and convert the group without it)"
        )

    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise PermanentConversionError(
            f"sb{subband:02d}: {path} is gone; restore it, then `dsa110-ingest retry`"
        ) from None
    except OSError as e:
        raise bad(f"not a readable HDF5 file ({e})") from None
    with f:
        header = f.get("Header")
        if not isinstance(header, h5py.Group):
            raise bad("no Header group")

        def arr(key: str) -> np.ndarray:
            ds = header.get(key)
            if not isinstance(ds, h5py.Dataset):
                raise bad(f"Header/{key} is missing")
            return np.asarray(ds[()])

        def optional(key: str, dtype: type | None) -> np.ndarray | None:
            ds = header.get(key)
            if not isinstance(ds, h5py.Dataset):
                return None
            return np.asarray(ds[()], dtype=dtype).reshape(-1)

        def text(key: str, default: str) -> str:
            ds = header.get(key)
            if not isinstance(ds, h5py.Dataset):
                return default
            v = ds[()]
            return (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip()

        freq = arr("freq_array").reshape(-1).astype(np.float64)
        times = arr("time_array").reshape(-1).astype(np.float64)
        ant1 = arr("ant_1_array").reshape(-1).astype(np.int64)
        ant2 = arr("ant_2_array").reshape(-1).astype(np.int64)
        integ = arr("integration_time").reshape(-1).astype(np.float64)
        pols = tuple(int(p) for p in arr("polarization_array").reshape(-1))
        if not (times.size == ant1.size == ant2.size == integ.size) or times.size == 0:
            raise bad("time_array, ant_1_array, ant_2_array and integration_time differ in length")
        if freq.size == 0 or not np.all(np.isfinite(freq)):
            raise bad("freq_array is empty or not finite")
        if not np.all(np.isfinite(times)) or not np.all(integ > 0):
            raise bad("time_array is not finite or integration_time is not positive")
        dec: float | None = None
        ek = header.get("extra_keywords")
        if isinstance(ek, h5py.Group) and isinstance(ek.get("phase_center_dec"), h5py.Dataset):
            v = np.asarray(ek["phase_center_dec"][()]).reshape(-1)
            if v.size != 1 or not np.isfinite(v[0]) or abs(float(v[0])) > math.pi / 2:
                raise bad(f"extra_keywords/phase_center_dec = {v!r} is not a declination in rad")
            dec = float(v[0])
        return FileHeader(
            path=path,
            subband=subband,
            freq_hz=freq,
            time_jd=times,
            ant1=ant1,
            ant2=ant2,
            integration_s=float(np.median(integ)),
            pointing_dec_rad=dec,
            lat_deg=float(arr("latitude").reshape(-1)[0]),
            lon_deg=float(arr("longitude").reshape(-1)[0]),
            alt_m=float(arr("altitude").reshape(-1)[0]),
            telescope_name=text("telescope_name", "unknown"),
            pols=pols,
            channel_width=optional("channel_width", np.float64),
            spw_ids=optional("flex_spw_id_array", None),
        )


def pointing(
    heads: list[FileHeader], override_deg: float | None, group_id: str
) -> tuple[float, str]:
    if override_deg is not None and not math.isnan(override_deg):
        return math.radians(override_deg), "config"
    decs = [head.pointing_dec_rad for head in heads]
    have = [d for d in decs if d is not None]
    if not have:
        lat = heads[0].lat_deg
        log.warning(
            "convert.pointing_fallback",
            group_id=group_id,
            dec_deg=lat,
            hint="the files carry no Header/extra_keywords/phase_center_dec: phased to the "
            "meridian at the site latitude (zenith); set [convert] pointing_dec_deg if wrong",
        )
        return math.radians(lat), "fallback"
    ref = have[0]
    if len(have) != len(decs) or any(abs(d - ref) > DEC_AGREE_RAD for d in have):
        listing = ", ".join(
            f"sb{head.subband:02d}="
            + (
                "none"
                if head.pointing_dec_rad is None
                else f"{math.degrees(head.pointing_dec_rad):.4f}"
            )
            for head in heads
        )
        raise PermanentConversionError(
            f"group {group_id}: subbands disagree on the pointing declination "
            f"(extra_keywords/phase_center_dec, deg: {listing}); fix the files, or set "
            "[convert] pointing_dec_deg and `dsa110-ingest retry` the group"
        )
    return float(np.median(have)), "file"


def time_grid(
    heads: list[FileHeader], tol_s: float, min_overlap: float, group_id: str
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The MS's integration grid and, per subband, (distinct times, grid index of each)."""
    tol = tol_s / SECONDS_PER_DAY
    uniq = [np.unique(head.time_jd) for head in heads]
    allt = np.concatenate(uniq)
    owner = np.concatenate([np.full(u.size, k) for k, u in enumerate(uniq)])
    order = np.argsort(allt, kind="stable")
    cluster = np.empty(allt.size, dtype=np.int64)
    cid, first, members = -1, -math.inf, set[int]()
    for j in order:
        t, k = allt[j], int(owner[j])
        # same integration: within the tolerance of the cluster's first time and not a
        # second time of one subband (a subband's own integrations are distinct)
        if t - first >= tol or k in members:
            cid += 1
            first, members = t, set()
        members.add(k)
        cluster[j] = cid
    n = cid + 1
    grid = np.array([float(np.median(allt[cluster == c])) for c in range(n)])
    counts = np.bincount(cluster, minlength=n)

    # the span most subbands cover; a subband mostly outside it is another observation
    major = np.flatnonzero(counts * 2 > len(heads))
    per_sb: list[tuple[np.ndarray, np.ndarray]] = []
    start = 0
    for u in uniq:
        per_sb.append((u, cluster[start : start + u.size]))
        start += u.size
    if major.size == 0:
        lo, hi = math.inf, -math.inf
    else:
        lo, hi = grid[major[0]] - tol, grid[major[-1]] + tol
    strays = []
    for head, (u, _) in zip(heads, per_sb, strict=True):
        inside = float(np.mean((u >= lo) & (u <= hi)))
        if inside < min_overlap:
            ref = grid[major[0]] if major.size else float(np.median(allt))
            strays.append(
                f"sb{head.subband:02d} ({head.path}) starts "
                f"{(u[0] - ref) * SECONDS_PER_DAY:+.1f} s "
                f"from the group ({inside:.0%} of its integrations overlap)"
            )
    if strays:
        raise PermanentConversionError(
            f"group {group_id}: time ranges do not overlap: {'; '.join(strays)} "
            f"(needs at least [convert] min_time_overlap = {min_overlap:g}); such a file "
            "belongs to another observation: move it out and `dsa110-ingest retry` the group"
        )
    return grid, per_sb


def channel_order(heads: list[FileHeader], group_id: str) -> list[bool]:
    """Whether each subband's channels descend; refuses shuffled channels, subbands
    overlapping in frequency and subbands disagreeing on polarizations."""
    subband_desc: list[bool] = []
    for head in heads:
        d = np.diff(head.freq_hz)
        if d.size and np.all(d < 0):
            subband_desc.append(True)
        elif d.size == 0 or np.all(d > 0):
            subband_desc.append(False)
        else:
            raise PermanentConversionError(
                f"sb{head.subband:02d} ({head.path}): channel frequencies are neither ascending "
                "nor descending (duplicate or shuffled channels); the file is damaged"
            )
    for a, b in itertools.pairwise(heads):
        if float(b.freq_hz.min()) <= float(a.freq_hz.max()):
            raise PermanentConversionError(
                f"group {group_id}: sb{a.subband:02d} ({a.path}) and sb{b.subband:02d} "
                f"({b.path}) overlap in frequency ({a.freq_hz.min() / 1e6:.3f}-"
                f"{a.freq_hz.max() / 1e6:.3f} MHz vs {b.freq_hz.min() / 1e6:.3f}-"
                f"{b.freq_hz.max() / 1e6:.3f} MHz): one of them is a copy under the wrong "
                "name; remove it and `dsa110-ingest retry` the group"
            )
    if len({head.pols for head in heads}) > 1:
        raise PermanentConversionError(
            f"group {group_id}: subbands disagree on polarizations: "
            + ", ".join(f"sb{head.subband:02d} {list(head.pols)}" for head in heads)
        )
    return subband_desc


def bl_keys(head: FileHeader) -> np.ndarray:
    return head.ant1 * (1 << 20) + head.ant2


def common_baselines(heads: list[FileHeader], group_id: str) -> np.ndarray:
    """The sorted baseline keys every subband must share."""
    keys0 = bl_keys(heads[0])
    ref_bls = np.unique(keys0)
    for head in heads[1:]:
        keys = bl_keys(head)
        # the usual group: every file lists the same baselines in the same order, and the
        # comparison costs a tenth of np.unique (16 of them were a third of the plan)
        bls = ref_bls if np.array_equal(keys, keys0) else np.unique(keys)
        if bls.size != ref_bls.size or not np.array_equal(bls, ref_bls):
            raise PermanentConversionError(
                f"group {group_id}: sb{head.subband:02d} ({head.path}) has {bls.size} baselines, "
                f"sb{heads[0].subband:02d} has {ref_bls.size} (or other antenna pairs): the "
                "files do not come from one correlator configuration"
            )
    return ref_bls


def runs_searchsorted(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.searchsorted(sorted_values, x)`` for ``x`` in runs of equal values (a file's
    times: one run per integration), looked up once per run (searching every row was a
    third of the plan)."""
    if x.size < 2:
        return np.searchsorted(sorted_values, x)
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
    pos = np.searchsorted(sorted_values, x[starts])
    return np.repeat(pos, np.diff(np.append(starts, x.size)))


def periodic_searchsorted(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.searchsorted(sorted_values, x)``, looked up once per period when ``x`` repeats
    every ``sorted_values.size`` values (a file's baselines: the same list each
    integration)."""
    n = sorted_values.size
    if n == 0 or x.size <= n or x.size % n:
        return np.searchsorted(sorted_values, x)
    first = x[:n]
    if not np.array_equal(x.reshape(-1, n), np.broadcast_to(first, (x.size // n, n))):
        return np.searchsorted(sorted_values, x)
    return np.tile(np.searchsorted(sorted_values, first), x.size // n)
