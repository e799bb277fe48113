"""What a conversion needs, as plain JSON, so that any executor (a local process today,
a Dask or batch worker later) can run it without the daemon's DB handles."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
