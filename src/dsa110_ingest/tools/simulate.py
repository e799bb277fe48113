"""A simulated DSA-110 correlator: real UVH5 subband files written with h5py.

The files use the layout DSA-110's writer produced (old-style UVH5: ``phase_type`` =
"drift", ``freq_array`` of shape (1, N), ``visdata`` of shape (Nblts, 1, Nfreqs, Npols),
``extra_keywords/phase_center_dec`` and ``ha_phase_center``) and pyuvdata reads them.
sb00 holds the highest frequencies, as upstream documents; readers must sort by the
frequencies in the files, never by subband number. By default the channels run
*descending* inside each file, and ``SimParams.time_offsets_s`` shifts the integrations
of single subbands by a few seconds, as DSA-110's files do: the converter has to put the
channels in order and the subbands on one time grid.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from dsa110_ingest.times import iso_to_unix, unix_to_iso

# OVRO, where DSA-110 stands
SITE_LAT_DEG = 37.2339
SITE_LON_DEG = -118.2825
SITE_ALT_M = 1222.0
BAND_TOP_HZ = 1.4995e9
BAND_BOTTOM_HZ = 1.3120e9
INTEGRATION_S = 12.884901888
N_INTEGRATIONS = 24
CADENCE_S = N_INTEGRATIONS * INTEGRATION_S  # ~309 s
JD_UNIX_EPOCH = 2440587.5


@dataclass(frozen=True)
class SimParams:
    nants: int = 8
    nchan: int = 8  # channels per subband (DSA-110: 384)
    ntimes: int = N_INTEGRATIONS
    npols: int = 2
    n_subbands: int = 16
    dec_deg: float = 55.0
    seed: int = 0
    descending: bool = True  # channels high -> low inside each file, as DSA-110 writes them
    time_offsets_s: tuple[float, ...] = ()  # per subband number: integrations shifted by s


def spread_offsets(max_s: float, n_subbands: int = 16) -> tuple[float, ...]:
    """Per-subband time offsets from -max_s to +max_s (sb00 earliest); () for none."""
    if not max_s:
        return ()
    return tuple(float(x) for x in np.linspace(-max_s, max_s, n_subbands))


@dataclass
class GroupPlan:
    start_unix: float
    files: dict[int, float] = field(default_factory=dict)  # subband -> name time (unix)


def subband_freqs(sb: int, p: SimParams) -> np.ndarray:
    """Channel centres of one subband, ascending; sb00 is the top of the band."""
    width = (BAND_TOP_HZ - BAND_BOTTOM_HZ) / p.n_subbands
    lo = BAND_TOP_HZ - (sb + 1) * width
    chw = width / p.nchan
    return lo + chw * (np.arange(p.nchan) + 0.5)


def _antenna_enu(nants: int, rng: np.random.Generator) -> np.ndarray:
    # DSA-110 is a T: a ~2.4 km east-west arm and a north arm
    ew = nants * 2 // 3
    e = np.concatenate([np.linspace(-1200, 1200, ew), rng.uniform(-5, 5, nants - ew)])
    n = np.concatenate([rng.uniform(-2, 2, ew), np.linspace(50, 1500, nants - ew)])
    u = rng.uniform(-1, 1, nants)
    return np.stack([e, n, u], axis=1)


def _enu_to_ecef_rel(enu: np.ndarray) -> np.ndarray:
    lat = math.radians(SITE_LAT_DEG)
    lon = math.radians(SITE_LON_DEG)
    sl, cl, sp, cp = math.sin(lon), math.cos(lon), math.sin(lat), math.cos(lat)
    rot = np.array([[-sl, -sp * cl, cp * cl], [cl, -sp * sl, cp * sl], [0.0, cp, sp]])
    return enu @ rot.T


def write_subband_file(
    path: str | os.PathLike[str], start_unix: float, sb: int, p: SimParams = SimParams()
) -> None:
    """Write one complete subband file at ``path`` (in place)."""
    rng = np.random.default_rng(p.seed + sb)
    enu = _antenna_enu(p.nants, np.random.default_rng(p.seed))
    a1, a2 = np.triu_indices(p.nants)  # autos included, as DSA-110 writes them
    nbls = a1.size
    nblts = nbls * p.ntimes
    offset = p.time_offsets_s[sb] if sb < len(p.time_offsets_s) else 0.0
    t_unix = start_unix + offset + INTEGRATION_S * (np.arange(p.ntimes) + 0.5)
    jd = np.repeat(t_unix / 86400.0 + JD_UNIX_EPOCH, nbls)
    ant1 = np.tile(a1, p.ntimes).astype(np.int32)
    ant2 = np.tile(a2, p.ntimes).astype(np.int32)
    uvw = enu[ant2] - enu[ant1]
    freqs = subband_freqs(sb, p)
    width = (BAND_TOP_HZ - BAND_BOTTOM_HZ) / p.n_subbands / p.nchan
    if p.descending:
        freqs = freqs[::-1]

    with h5py.File(path, "w") as f:
        header = f.create_group("Header")
        header["latitude"] = SITE_LAT_DEG
        header["longitude"] = SITE_LON_DEG
        header["altitude"] = SITE_ALT_M
        header["telescope_name"] = np.bytes_("OVRO_DSA")
        header["instrument"] = np.bytes_("DSA")
        header["history"] = np.bytes_("written by dsa110_ingest.simulate")
        header["vis_units"] = np.bytes_("uncalib")
        header["object_name"] = np.bytes_("search")
        header["phase_type"] = np.bytes_("drift")
        header["Nants_data"] = p.nants
        header["Nants_telescope"] = p.nants
        header["Nbls"] = nbls
        header["Nblts"] = nblts
        header["Nfreqs"] = p.nchan
        header["Npols"] = p.npols
        header["Nspws"] = 1
        header["Ntimes"] = p.ntimes
        header["antenna_names"] = np.array([f"pad{i + 1}".encode() for i in range(p.nants)])
        header["antenna_numbers"] = np.arange(p.nants, dtype=np.int64)
        header["antenna_positions"] = _enu_to_ecef_rel(enu)
        header["antenna_diameters"] = np.full(p.nants, 4.65)
        header["ant_1_array"] = ant1
        header["ant_2_array"] = ant2
        header["uvw_array"] = uvw
        header["time_array"] = jd
        header["integration_time"] = np.full(nblts, INTEGRATION_S)
        header["freq_array"] = freqs[np.newaxis, :]
        header["channel_width"] = width
        header["spw_array"] = np.array([0], dtype=np.int64)
        header["polarization_array"] = np.array([-5, -6, -7, -8][: p.npols], dtype=np.int64)
        ek = header.create_group("extra_keywords")
        ek["phase_center_dec"] = math.radians(p.dec_deg)
        ek["ha_phase_center"] = 0.0
        d = f.create_group("Data")
        shape = (nblts, 1, p.nchan, p.npols)
        vis = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        vis[ant1 == ant2] = 100.0  # autos: real and positive
        d["visdata"] = vis
        d["flags"] = np.zeros(shape, dtype=bool)
        d["nsamples"] = np.ones(shape, dtype=np.float32)


def plan_groups(
    n_groups: int,
    start_iso: str,
    jitter_s: float = 2.0,
    *,
    cadence_s: float = CADENCE_S,
    missing: Iterable[int] = (),
    n_subbands: int = 16,
    seed: int = 0,
) -> list[GroupPlan]:
    """Timestamps of each group's files: one start per cadence, per-file jitter."""
    rng = np.random.default_rng(seed)
    miss = set(missing)
    start = iso_to_unix(start_iso)
    plans = []
    for g in range(n_groups):
        base = round(start + g * cadence_s)
        plan = GroupPlan(start_unix=base)
        for sb in range(n_subbands):
            if sb in miss:
                continue
            plan.files[sb] = base + round(rng.uniform(-jitter_s, jitter_s))
        plans.append(plan)
    return plans


def file_name(name_unix: float, sb: int) -> str:
    return f"{unix_to_iso(name_unix)}_sb{sb:02d}.hdf5"


def write_file(
    out_dir: Path,
    name_unix: float,
    sb: int,
    p: SimParams,
    mode: str = "inplace",
    obs_start_unix: float | None = None,
) -> Path:
    """Write one subband file the way a given kind of writer would.

    The name carries the writing node's timestamp (jittered); the header carries the
    correlator's integrations, which all subbands of one observation share.

    ``inplace`` writes the final name directly; ``tmp_rename`` writes ``x.tmp`` and renames;
    ``rsync`` writes a hidden ``.x.XXXXXX`` and renames, as rsync does.
    """
    final = out_dir / file_name(name_unix, sb)
    start = name_unix if obs_start_unix is None else obs_start_unix
    if mode == "inplace":
        write_subband_file(final, start, sb, p)
    elif mode in ("tmp_rename", "rsync"):
        tmp = (
            out_dir / (final.name + ".tmp")
            if mode == "tmp_rename"
            else out_dir / f".{final.name}.{os.getpid() % 1000000:06d}"
        )
        write_subband_file(tmp, start, sb, p)
        os.replace(tmp, final)
    else:
        raise ValueError(f"unknown write mode {mode!r}")
    return final


def simulate(
    out_dir: str | os.PathLike[str],
    n_groups: int,
    start_iso: str = "2025-10-02T00:00:00",
    jitter_s: float = 2.0,
    *,
    params: SimParams = SimParams(),
    missing: Iterable[int] = (),
    cadence_s: float = CADENCE_S,
    realtime_interval_s: float = 0.0,
    mode: str = "inplace",
    on_file: Callable[[Path], None] | None = None,
) -> list[GroupPlan]:
    """Write ``n_groups`` groups; with ``realtime_interval_s`` > 0, pace them like a correlator."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_groups(
        n_groups,
        start_iso,
        jitter_s,
        cadence_s=cadence_s,
        missing=missing,
        n_subbands=params.n_subbands,
        seed=params.seed,
    )
    for i, plan in enumerate(plans):
        if realtime_interval_s and i:
            time.sleep(realtime_interval_s)
        for sb, t in plan.files.items():
            path = write_file(out, t, sb, params, mode, plan.start_unix)
            if on_file:
                on_file(path)
    return plans
