"""Which storage location holds a path: the one answer the indexer, watcher and
migration share."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsa110_ingest.config import StorageLocation, is_under, location_holding
from dsa110_ingest.config.locations import parse_locations
from dsa110_ingest.errors import ConfigError


def test_a_flat_location_holds_only_its_own_files() -> None:
    loc = StorageLocation("a", Path("/data/a"))
    assert loc.holds("/data/a/x_sb00.hdf5")
    assert not loc.holds("/data/a/sub/x_sb00.hdf5")
    assert not loc.holds("/data/ab/x_sb00.hdf5")  # a prefix of the name is not a parent
    assert not loc.holds("/data/x_sb00.hdf5")


def test_a_recursive_location_holds_files_at_any_depth() -> None:
    loc = StorageLocation("a", Path("/data/a"), recursive=True)
    assert loc.holds("/data/a/x.hdf5") and loc.holds("/data/a/1/2/x.hdf5")
    assert not loc.holds("/data/ab/x.hdf5") and not loc.holds("/data/a")


def test_location_holding_returns_the_key_and_location() -> None:
    a = StorageLocation("a", Path("/data/a"))
    b = StorageLocation("b", Path("/data/b"), recursive=True)
    pairs = [(1, a), (2, b)]
    assert location_holding(pairs, "/data/b/d/x.hdf5") == (2, b)
    assert location_holding(pairs, "/data/a/x.hdf5") == (1, a)
    assert location_holding(pairs, "/data/a/d/x.hdf5") is None
    assert location_holding([], "/data/a/x.hdf5") is None


def test_is_under() -> None:
    assert is_under("/a/b", "/a/b") and is_under("/a/b/c", "/a/b")
    assert not is_under("/a/bc", "/a/b")


def test_overlapping_or_twice_named_locations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="overlap"):
        parse_locations([{"name": "a", "path": "d"}, {"name": "b", "path": "d/e"}], tmp_path, "w")
    with pytest.raises(ConfigError, match="used twice"):
        parse_locations([{"name": "a", "path": "d"}, {"name": "a", "path": "e"}], tmp_path, "w")


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"name": "a", "path": "d", "role": "x"}, "storage_locations[0].role must be one of"),
        ({"name": "a", "path": "d", "recursive": "yes"}, "recursive must be true/false"),
        ({"name": "a", "path": "d", "colour": "red"}, "unknown key(s) ['colour']"),
        ({"path": "d"}, "needs a string `name`"),
    ],
)
def test_a_bad_location_is_named_by_its_index(
    tmp_path: Path, table: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_locations([table], tmp_path, "w")
    assert needle in str(e.value)
