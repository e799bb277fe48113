"""The scanner on real folders: what is a candidate, what is skipped, links that escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsa110_ingest.ingest.scanner import Candidate, scan_tree, stat_path
from dsa110_ingest.naming import NameParser

PARSER = NameParser()
NAME = "2025-10-02T00:00:00_sb03.hdf5"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _scan(root: Path, recursive: bool = False) -> dict[str, Candidate]:
    roots = (str(root),)
    return {c.filename: c for c in scan_tree(root, recursive, 7, PARSER, roots)}


def test_a_subband_file_is_a_candidate_with_its_name_size_and_mtime(tmp_path: Path) -> None:
    f = _touch(tmp_path / NAME, b"12345")
    c = stat_path(str(f), 7, PARSER, (str(tmp_path),))
    assert c is not None
    assert (c.path, c.filename, c.size, c.location_id) == (str(f), NAME, 5, 7)
    assert c.mtime_ns == os.stat(f).st_mtime_ns
    assert c.name is not None and c.name.subband_num == 3 and c.name_error is None
    assert not c.symlink_escape


def test_a_data_file_with_a_bad_name_is_a_candidate_that_carries_the_error(
    tmp_path: Path,
) -> None:
    f = _touch(tmp_path / "2025-10-02T00:00:00_sb99.hdf5")
    c = stat_path(str(f), 1, PARSER, (str(tmp_path),))
    assert c is not None and c.name is None
    assert c.name_error is not None and "outside 0..15" in c.name_error.detail
    # a misnamed file sorts after every named one: it never delays a group
    good = stat_path(str(_touch(tmp_path / NAME)), 1, PARSER, (str(tmp_path),))
    assert good is not None and sorted([c, good], key=lambda x: x.sort_key) == [good, c]


@pytest.mark.parametrize("name", [".hidden_sb00.hdf5", "notes.txt", "x.hdf5.tmp"])
def test_hidden_and_foreign_names_are_not_candidates(tmp_path: Path, name: str) -> None:
    f = _touch(tmp_path / name)
    assert stat_path(str(f), 1, PARSER, (str(tmp_path),)) is None
    assert name not in _scan(tmp_path)


def test_a_folder_or_fifo_named_like_a_file_is_an_unreadable_candidate(tmp_path: Path) -> None:
    # rejected by name, never read (operator2 D8: not silently skipped)
    (tmp_path / NAME).mkdir()
    fifo = tmp_path / "2025-10-02T00:00:00_sb04.hdf5"
    os.mkfifo(fifo)
    folder = stat_path(str(tmp_path / NAME), 1, PARSER, (str(tmp_path),))
    pipe = stat_path(str(fifo), 1, PARSER, (str(tmp_path),))
    assert folder is not None and folder.not_a_file == "a directory" and not folder.readable
    assert pipe is not None and pipe.not_a_file == "a FIFO (named pipe)" and not pipe.readable
    scanned = _scan(tmp_path)
    assert set(scanned) == {NAME, fifo.name}
    assert all(c.not_a_file and not c.readable for c in scanned.values())


def test_a_vanished_file_is_no_candidate(tmp_path: Path) -> None:
    assert stat_path(str(tmp_path / NAME), 1, PARSER, (str(tmp_path),)) is None


def test_a_symlink_is_followed_only_inside_the_locations(tmp_path: Path) -> None:
    root, other = tmp_path / "loc", tmp_path / "elsewhere"
    inside = _touch(root / "sub" / "2025-10-02T00:00:00_sb01.hdf5")
    outside = _touch(other / "2025-10-02T00:00:00_sb02.hdf5")
    (root / "2025-10-02T00:00:00_sb05.hdf5").symlink_to(inside)
    (root / "2025-10-02T00:00:00_sb06.hdf5").symlink_to(outside)
    (root / "2025-10-02T00:00:00_sb07.hdf5").symlink_to(root / "dangling")
    found = _scan(root)
    assert set(found) == {f"2025-10-02T00:00:00_sb0{n}.hdf5" for n in (5, 6, 7)}
    # a dangling link is a candidate to reject, never to read
    dangling = found["2025-10-02T00:00:00_sb07.hdf5"]
    assert (dangling.not_a_file or "").startswith("a dangling symlink")
    assert not dangling.readable
    assert not found["2025-10-02T00:00:00_sb05.hdf5"].symlink_escape
    assert found["2025-10-02T00:00:00_sb06.hdf5"].symlink_escape
    # the same verdict for a path named by a watcher event
    c = stat_path(str(root / "2025-10-02T00:00:00_sb06.hdf5"), 1, PARSER, (str(root),))
    assert c is not None and c.symlink_escape and c.size == 1  # the target's stat


def test_a_link_to_a_sibling_folder_with_a_common_prefix_escapes(tmp_path: Path) -> None:
    root, sibling = tmp_path / "loc", tmp_path / "loc2"
    target = _touch(sibling / NAME)
    (root).mkdir()
    (root / NAME).symlink_to(target)
    (c,) = _scan(root).values()
    assert c.symlink_escape


def test_recursive_scans_descend_but_not_into_hidden_folders(tmp_path: Path) -> None:
    _touch(tmp_path / "2025-10-02T00:00:00_sb00.hdf5")
    _touch(tmp_path / "a" / "b" / "2025-10-02T00:00:00_sb01.hdf5")
    _touch(tmp_path / ".snapshot" / "2025-10-02T00:00:00_sb02.hdf5")
    assert set(_scan(tmp_path)) == {"2025-10-02T00:00:00_sb00.hdf5"}
    assert set(_scan(tmp_path, recursive=True)) == {
        "2025-10-02T00:00:00_sb00.hdf5",
        "2025-10-02T00:00:00_sb01.hdf5",
    }


def test_a_missing_location_yields_nothing(tmp_path: Path) -> None:
    assert _scan(tmp_path / "not-mounted", recursive=True) == {}


def test_candidates_sort_by_observation_time_then_subband(tmp_path: Path) -> None:
    names = [
        "2025-10-02T00:05:00_sb00.hdf5",
        "2025-10-02T00:00:00_sb02.hdf5",
        "2025-10-02T00:00:00_sb01.hdf5",
    ]
    for n in names:
        _touch(tmp_path / n)
    ordered = sorted(_scan(tmp_path).values(), key=lambda c: c.sort_key)
    assert [c.filename for c in ordered] == sorted(names)
