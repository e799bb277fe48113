"""The tables of the config file, one typed section each, and each checks its own values.

A section's ``validate(where)`` raises :class:`ConfigError` naming ``where`` (the file or
"command line"), the section, the key and the fix; checks that span sections are
:meth:`dsa110_ingest.config.Config.validate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from dsa110_ingest.config.tables import check_range, resolve
from dsa110_ingest.errors import ConfigError

ORDERS = ("oldest_first", "newest_first")
BACKENDS = ("native", "pyuvdata", "command")
PHASINGS = ("meridian", "meridian_mid")
LOCKING = ("best-effort", "true", "false")
EXECUTORS = ("local", "dask")


class Section:
    """A ``[name]`` table; ``RANGES`` are (key, lowest allowed, is the lowest allowed)."""

    NAME: ClassVar[str] = ""
    RANGES: ClassVar[tuple[tuple[str, float, bool], ...]] = ()

    def validate(self, where: str) -> None:
        for key, low, inclusive in self.RANGES:
            check_range(where, self.NAME, key, getattr(self, key), low, inclusive)


@dataclass(frozen=True)
class GroupsConfig(Section):
    NAME = "groups"
    RANGES = (
        ("expected_subbands", 1, True),
        ("cluster_tolerance_seconds", 0, False),
        ("incomplete_timeout_seconds", 0, False),
        ("max_header_skew_seconds", 0, False),
    )

    expected_subbands: int = 16
    cluster_tolerance_seconds: float = 60.0
    incomplete_timeout_seconds: float = 900.0
    # A name timestamp this far from the header's first integration means a misnamed file.
    max_header_skew_seconds: float = 600.0


@dataclass(frozen=True)
class WatchConfig(Section):
    NAME = "watch"
    RANGES = (
        ("settle_seconds", 0, False),
        ("poll_interval_seconds", 0, False),
        ("rescan_interval_seconds", 0, False),
        ("locked_retry_max_seconds", 0, False),
        ("incomplete_check_seconds", 0, False),
    )

    settle_seconds: float = 5.0
    poll_interval_seconds: float = 5.0
    rescan_interval_seconds: float = 600.0
    locked_retry_max_seconds: float = 600.0
    incomplete_check_seconds: float = 10.0


@dataclass(frozen=True)
class ReadConfig(Section):
    NAME = "read"
    RANGES = (("workers", 0, True), ("batch_size", 1, True))

    hdf5_locking: str = "best-effort"
    workers: int = 0  # 0: one reader process per core for backfills
    batch_size: int = 256
    # a header read still running after this is killed and the file rejected (a hang)
    deadline_seconds: float = 30.0

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.hdf5_locking not in LOCKING:
            raise ConfigError(f"{where}: [read] hdf5_locking must be one of {LOCKING}")


@dataclass(frozen=True)
class ConvertConfig(Section):
    NAME = "convert"
    RANGES = (
        ("workers", 1, True),
        ("max_attempts", 1, True),
        ("backoff_initial_seconds", 0, False),
        ("backoff_max_seconds", 0, False),
        ("lease_seconds", 0, False),
        ("timeout_seconds", 0, False),
        ("warn_after_seconds", 0, False),
        ("convert_incomplete_after_seconds", 0, True),
        ("min_subbands", 1, True),
    )

    enabled: bool = True
    backend: str = "native"
    output_dir: Path = Path("ms")
    ms_name: str = "{group_id}.ms"
    workers: int = 1
    max_attempts: int = 4
    backoff_initial_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    lease_seconds: float = 60.0
    timeout_seconds: float = 1800.0
    warn_after_seconds: float = 270.0
    order: str = "oldest_first"
    command: tuple[str, ...] = ()
    convert_incomplete_after_seconds: float = 0.0  # 0: incomplete groups are never converted
    min_subbands: int = 16
    # the Measurement Set recipe (docs/architecture.md, "Conversion"): see convert/plan.py
    phasing: str = "meridian"  # one centre per integration; "meridian_mid": one at mid time
    pointing_dec_deg: float | None = None  # None: Header/extra_keywords/phase_center_dec
    time_tolerance_seconds: float = 0.0  # 0: half an integration
    min_time_overlap: float = 0.5
    imaging_columns: bool = False  # MODEL_DATA, CORRECTED_DATA, WEIGHT_SPECTRUM
    telescope_name: str = ""  # "": as the files say
    # where conversions run: "local" child processes, or tasks on a Dask cluster
    executor: str = "local"
    dask_scheduler: str = ""  # "tcp://host:8786"
    dask_scheduler_file: str = ""  # or the JSON file `dask scheduler --scheduler-file` writes
    dask_resource: str = "conversion"  # each task takes 1; "" runs one per worker thread

    def with_paths(self, output_base: Path, file_base: Path) -> ConvertConfig:
        """Paths made absolute: ``output_dir`` against ``output_base``, the scheduler file
        against the config file's folder."""
        c = replace(self, output_dir=resolve(self.output_dir, output_base))
        if c.dask_scheduler_file:
            c = replace(c, dask_scheduler_file=str(resolve(Path(c.dask_scheduler_file), file_base)))
        return c

    def validate(self, where: str) -> None:
        self._validate_choices(where)
        super().validate(where)
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ConfigError(
                f"{where}: [convert] backoff_max_seconds ({self.backoff_max_seconds:g}) must "
                f"be >= backoff_initial_seconds ({self.backoff_initial_seconds:g})"
            )

    def _validate_choices(self, where: str) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"{where}: [convert] backend must be one of {BACKENDS}")
        if self.order not in ORDERS:
            raise ConfigError(f"{where}: [convert] order must be one of {ORDERS}")
        if self.backend == "command" and not self.command:
            raise ConfigError(
                f'{where}: [convert] backend = "command" needs `command`, an argv list such as '
                '["my-converter", "--out", "{output}", "{inputs}"]'
            )
        if "{group_id}" not in self.ms_name:
            raise ConfigError(f"{where}: [convert] ms_name must contain {{group_id}}")
        if self.phasing not in PHASINGS:
            raise ConfigError(f"{where}: [convert] phasing must be one of {PHASINGS}")
        dec = self.pointing_dec_deg
        if not (dec is None or -90.0 <= dec <= 90.0):
            raise ConfigError(
                f"{where}: [convert] pointing_dec_deg must be a declination in degrees "
                "(-90 .. 90); leave it out to take it from the files"
            )
        if self.time_tolerance_seconds < 0 or not 0.0 < self.min_time_overlap <= 1.0:
            raise ConfigError(
                f"{where}: [convert] time_tolerance_seconds must be >= 0 (0: half an "
                "integration) and min_time_overlap a fraction in (0, 1]"
            )
        if self.executor not in EXECUTORS:
            raise ConfigError(f"{where}: [convert] executor must be one of {EXECUTORS}")
        if self.executor == "dask" and bool(self.dask_scheduler) == bool(self.dask_scheduler_file):
            raise ConfigError(
                f'{where}: [convert] executor = "dask" needs exactly one of dask_scheduler '
                '(e.g. "tcp://head-node:8786") and dask_scheduler_file'
            )


SECTIONS: dict[str, type[Section]] = {
    cls.NAME: cls for cls in (GroupsConfig, WatchConfig, ReadConfig, ConvertConfig)
}
