"""What a conversion needs, as plain JSON, so that any executor (a local process, a Dask
worker) can run it without the daemon's DB handles: built from the index here
(:func:`build_request`), and turned into its ``ms_index`` row here (:func:`ms_row`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dsa110_ingest.convert.ownership import fence
from dsa110_ingest.errors import ConversionError
from dsa110_ingest.naming import missing_subbands

if TYPE_CHECKING:
    from dsa110_ingest.config import Config
    from dsa110_ingest.db import IndexStore
    from dsa110_ingest.db.records import FileRecord


@dataclass(frozen=True)
class InputFile:
    path: str
    subband: int
    freq_min_hz: float
    n_freqs: int


@dataclass(frozen=True)
class ConversionRequest:
    group_id: str
    inputs: tuple[InputFile, ...]
    output: str  # final MS path
    backend: str
    command: tuple[str, ...] = ()
    timeout_s: float = 1800.0
    partial: bool = False
    missing_subbands: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    # the MS recipe ([convert] keys; see convert/plan.py)
    phasing: str = "meridian"
    pointing_dec_deg: float | None = None  # None: from the files
    time_tolerance_s: float | None = None  # None: half an integration
    min_time_overlap: float = 0.5
    imaging_columns: bool = False
    telescope_name: str | None = None  # None: from the files
    # the claimed attempt's fencing token: only its result may be registered
    token: str = ""

    @property
    def by_frequency(self) -> list[InputFile]:
        # pyuvdata concatenates along frequency in list order: a shuffled list silently
        # scrambles channels, and sb00 is the *highest* band, so the order is by header freq
        return sorted(self.inputs, key=lambda f: f.freq_min_hz)

    @property
    def n_channels(self) -> int:
        return sum(f.n_freqs for f in self.inputs)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConversionRequest:
        d = dict(d)
        d["inputs"] = tuple(InputFile(**f) for f in d["inputs"])
        d["command"] = tuple(d.get("command", ()))
        d["missing_subbands"] = tuple(d.get("missing_subbands", ()))
        return cls(**d)


def ms_path_for(cfg: Config, group_id: str) -> str:
    name = cfg.convert.ms_name.format(group_id=group_id)
    return str(cfg.convert.output_dir / name)


def build_request(
    cfg: Config, db: IndexStore, group_id: str, *, force: bool = False, partial: bool = False
) -> ConversionRequest:
    """The request for ``group_id`` from the index; a group whose files are gone, or
    that is incomplete (unless ``partial`` or ``force``), is refused naming the fix."""
    g = db.group(group_id)
    if g is None:
        raise ConversionError(f"group {group_id} is not in {db.name}; see `dsa110-ingest groups`")
    files = db.group_files(group_id)
    present = [f for f in files if not f.missing]
    # a member gone from disk matters unless another member on disk holds its subband
    held = {f.subband_num for f in present}
    off_disk = [f.path for f in files if f.missing and f.subband_num not in held]
    if off_disk and not force:
        # no other file on disk claims the subband (one would have taken the slot): the
        # operator may have removed it on purpose, so restoring is one way out of two
        raise ConversionError(
            f"group {group_id}: {len(off_disk)} file(s) no longer on disk and no other "
            f"file for their subband, e.g. {off_disk[0]}; put the right file for that "
            f"subband in a storage location and `dsa110-ingest retry {group_id}`, or "
            f"convert without it: `dsa110-ingest convert --force {group_id}`"
        )
    missing = tuple(missing_subbands((f.subband_num for f in present), g.expected_subbands))
    if missing and not (partial or force):
        raise ConversionError(
            f"group {group_id} is missing {', '.join(missing)}; an incomplete "
            "group is converted only with [convert] "
            "convert_incomplete_after_seconds, or with --force"
        )
    c = cfg.convert
    return ConversionRequest(
        phasing=c.phasing,
        pointing_dec_deg=c.pointing_dec_deg,
        time_tolerance_s=c.time_tolerance_seconds or None,
        min_time_overlap=c.min_time_overlap,
        imaging_columns=c.imaging_columns,
        telescope_name=c.telescope_name or None,
        group_id=group_id,
        inputs=tuple(InputFile(f.path, f.subband_num, f.freq_min_hz, f.n_freqs) for f in present),
        output=ms_path_for(cfg, group_id),
        backend=c.backend,
        command=c.command,
        timeout_s=c.timeout_seconds,
        partial=bool(missing),
        missing_subbands=missing,
        meta={
            "force": force,
            "start_mjd": g.start_mjd,
            "end_mjd": g.end_mjd,
            "ra_deg": _mean(present, "ra_deg"),
            "dec_deg": _mean(present, "dec_deg"),
            # the claim the finished MS is moved in under (convert/ownership.py)
            **fence(cfg, db.index_id() or ""),
        },
    )


def _mean(rows: list[FileRecord], key: str) -> float | None:
    vals = [getattr(r, key) for r in rows if getattr(r, key) is not None]
    return sum(vals) / len(vals) if vals else None


def ms_row(req: ConversionRequest, result: dict[str, Any], now: float) -> dict[str, Any]:
    """The ``ms_index`` row of a converted request, from the worker's ``result``."""
    m = req.meta
    start, end = m.get("start_mjd"), m.get("end_mjd")
    return {
        "path": result["ms_path"],
        "group_id": req.group_id,
        "start_mjd": start,
        "end_mjd": end,
        "mid_mjd": (start + end) / 2 if start is not None and end is not None else None,
        # the MS's own mid-time phase centre; the files' drift-scan centre only for an MS
        # whose writer did not report one
        "ra_deg": result.get("ra_deg", m.get("ra_deg")),
        "dec_deg": result.get("dec_deg", m.get("dec_deg")),
        "status": "converted",
        "stage": "converted",
        "processed_at": now,
        "stage_updated_at": now,
        "n_subbands": len(req.inputs),
        "missing_subbands": ",".join(req.missing_subbands) or None,
        "n_channels": result.get("n_channels"),
        "freq_min_hz": result.get("freq_min_hz"),
        "freq_max_hz": result.get("freq_max_hz"),
    }
