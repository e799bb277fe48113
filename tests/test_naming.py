from __future__ import annotations

import pytest

from dsa110_ingest.errors import MisnamedFileError
from dsa110_ingest.naming import NameParser


def test_parses_the_upstream_name() -> None:
    n = NameParser().parse("/d/x", "2025-10-02T00:12:00_sb03.hdf5")
    assert (n.timestamp_iso, n.subband_num, n.subband_code) == ("2025-10-02T00:12:00", 3, "sb03")


@pytest.mark.parametrize(
    "name",
    [
        "2025-10-02T00:12:00_sb3.hdf5",
        "2025-13-02T00:12:00_sb03.hdf5",
        "2025-10-02T00:12:00_sb16.hdf5",
        "obs_sb03.hdf5",
    ],
)
def test_misnamed_data_files_are_errors_that_say_how_to_fix(name: str) -> None:
    with pytest.raises(MisnamedFileError) as e:
        NameParser().parse("/d/" + name, name)
    assert e.value.reason == "misnamed" and e.value.fix


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2025-10-02T00:12:00_sb03.hdf5", True),
        ("junk.hdf5", True),
        ("x.h5", True),
        (".2025-10-02T00:12:00_sb03.hdf5.Ab12Cd", False),
        (".fuse_hidden0000001", False),
        ("2025-10-02T00:12:00_sb03.hdf5.tmp", False),
        ("notes.txt", False),
    ],
)
def test_candidates_exclude_temp_and_hidden_files(name: str, expected: bool) -> None:
    assert NameParser().is_candidate(name) is expected
