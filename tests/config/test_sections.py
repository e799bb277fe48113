"""Each config section checks its own values, without a file or an environment."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest

from dsa110_ingest.config import (
    SECTIONS,
    ConvertConfig,
    GroupsConfig,
    ReadConfig,
    WatchConfig,
)
from dsa110_ingest.errors import ConfigError


@pytest.mark.parametrize("cls", list(SECTIONS.values()))
def test_defaults_are_valid(cls: type) -> None:
    cls().validate("here")


@pytest.mark.parametrize("cls", list(SECTIONS.values()))
def test_every_range_names_a_field_of_its_section(cls: type) -> None:
    names = {f.name for f in fields(cls)}
    assert cls.RANGES and {key for key, _, _ in cls.RANGES} <= names


@pytest.mark.parametrize(
    ("section", "key", "bad"),
    [
        (cls(), key, low - 1 if inclusive else low)
        for cls in SECTIONS.values()
        for key, low, inclusive in cls.RANGES
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_value_below_its_range_is_named_with_its_section(
    section: object, key: str, bad: float
) -> None:
    from dataclasses import replace

    value = float(bad) if isinstance(getattr(section, key), float) else int(bad)
    with pytest.raises(ConfigError) as e:
        replace(section, **{key: value}).validate("file x.toml")  # type: ignore[type-var]
    msg = str(e.value)
    assert msg.startswith(f"file x.toml: [{section.NAME}] {key} must be")  # type: ignore[attr-defined]


def test_a_non_finite_duration_is_refused() -> None:
    with pytest.raises(ConfigError, match="settle_seconds must be a finite number"):
        WatchConfig(settle_seconds=math.inf).validate("w")


def test_zero_is_allowed_where_it_means_something() -> None:
    ReadConfig(workers=0).validate("w")
    ConvertConfig(convert_incomplete_after_seconds=0).validate("w")
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        ConvertConfig(workers=0).validate("w")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"backend": "casa"}, "backend must be one of"),
        ({"order": "random"}, "order must be one of"),
        ({"backend": "command"}, "needs `command`"),
        ({"ms_name": "x.ms"}, "ms_name must contain {group_id}"),
        ({"phasing": "zenith"}, "phasing must be one of"),
        ({"pointing_dec_deg": 91.0}, "pointing_dec_deg must be a declination"),
        ({"min_time_overlap": 0.0}, "min_time_overlap a fraction"),
        ({"time_tolerance_seconds": -1.0}, "time_tolerance_seconds must be >= 0"),
        ({"executor": "slurm"}, "executor must be one of"),
        ({"executor": "dask"}, "needs exactly one of dask_scheduler"),
        (
            {"executor": "dask", "dask_scheduler": "tcp://a:1", "dask_scheduler_file": "f"},
            "needs exactly one of dask_scheduler",
        ),
        ({"backoff_initial_seconds": 10.0, "backoff_max_seconds": 5.0}, "backoff_max_seconds"),
    ],
)
def test_convert_choices(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=r"^w: \[convert\]") as e:
        ConvertConfig(**changes).validate("w")  # type: ignore[arg-type]
    assert needle in str(e.value)


def test_convert_accepts_a_complete_dask_and_command_setup() -> None:
    ConvertConfig(executor="dask", dask_scheduler="tcp://h:8786").validate("w")
    ConvertConfig(backend="command", command=("conv", "{output}")).validate("w")


def test_read_locking_mode_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"\[read\] hdf5_locking must be one of"):
        ReadConfig(hdf5_locking="maybe").validate("w")


def test_groups_section_checks_its_own_ranges_only() -> None:
    GroupsConfig(expected_subbands=1).validate("w")
    with pytest.raises(ConfigError, match="cluster_tolerance_seconds must be > 0"):
        GroupsConfig(cluster_tolerance_seconds=0.0).validate("w")


def test_with_paths_resolves_output_against_its_base_and_the_scheduler_file_against_the_file(
    tmp_path: Path,
) -> None:
    c = ConvertConfig(output_dir=Path("out/../ms"), dask_scheduler_file="s.json")
    r = c.with_paths(tmp_path / "state", tmp_path / "etc")
    assert r.output_dir == tmp_path / "state" / "ms"
    assert r.dask_scheduler_file == str(tmp_path / "etc" / "s.json")
    assert ConvertConfig().with_paths(tmp_path, tmp_path).dask_scheduler_file == ""
