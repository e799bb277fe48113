from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa110_ingest.errors import MisnamedFileError
from dsa110_ingest.naming import (
    NameParser,
    missing_subbands,
    path_bytes,
    path_text,
    printable,
    subband_code,
)


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


@pytest.mark.parametrize(
    "name",
    [
        "2025-10-02T00:00:00_sb00.hdf5\n",
        "2025-10-02T00:00:00_sb00.hdf5\r\n",
        "2025-10-02T00:00:00\n_sb00.hdf5",
        "x2025-10-02T00:00:00_sb00.hdf5",
        "\udcff\udcfe2025-10-02T00:00:00_sb00.hdf5",  # bytes ff fe: not UTF-8
        "2025-10-02T00:00:00_sb00\udc80.hdf5",
    ],
)
def test_only_a_whole_name_is_a_subband_name(name: str) -> None:
    """A trailing newline satisfied `$`, a prefix satisfied `search`: such names are
    candidates (an operator hears of them) but never subband files."""
    p = NameParser()
    assert p.is_candidate(name)
    with pytest.raises(MisnamedFileError):
        p.parse("/data/" + name, name)


@given(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_any_name_is_stored_as_text_and_round_trips(raw: bytes) -> None:
    path = os.fsdecode(b"/data/" + raw)
    text = path_text(path)
    text.encode("utf-8")  # storable in any DB column, printable in any log
    exact = path_bytes(path)
    assert os.fsdecode(exact if exact is not None else text.encode()) == path


def test_subband_code_is_two_digits() -> None:
    assert [subband_code(n) for n in (0, 7, 15, 100)] == ["sb00", "sb07", "sb15", "sb100"]


def test_missing_subbands_are_named_in_order() -> None:
    assert missing_subbands([3, 0, 1, 3], 5) == ["sb02", "sb04"]
    assert missing_subbands(iter(range(16)), 16) == []
    assert missing_subbands([], 3) == ["sb00", "sb01", "sb02"]
    # a subband outside the expected range is not "missing" and adds nothing
    assert missing_subbands([0, 1, 20], 2) == []


@pytest.mark.parametrize(
    "name",
    [
        "2025-10-02T00:12:00_SB03.HDF5",
        "2025-10-02T00:12:00_sb03.HDF5",
        "2025-10-02T00:12:00_SB03.hdf5",
        "2025-10-02T00:12:00_Sb03.Hdf5",
    ],
)
def test_a_name_in_the_wrong_case_is_rejected_saying_the_correlator_writes_lower_case(
    name: str,
) -> None:
    p = NameParser()
    assert p.is_candidate(name)
    with pytest.raises(MisnamedFileError) as e:
        p.parse("/data/" + name, name)
    assert e.value.reason == "misnamed"
    assert "the correlator writes `_sb<NN>.hdf5` in lower case" in str(e.value)


def test_data_suffixes_in_upper_case_are_candidates() -> None:
    p = NameParser()
    assert p.is_candidate("junk.HDF5") and p.is_candidate("x.H5") and p.is_candidate("y.UVH5")
    assert not p.is_candidate("notes.TXT")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/data/x\n  rejected (ok) fake_sb01.hdf5", "/data/x\\n  rejected (ok) fake_sb01.hdf5"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("abc\u202eevil", "abc\\u202eevil"),
        ("tab\there\r", "tab\\there\\r"),
        ("/data/ünïcode ok", "/data/ünïcode ok"),
        ("/data/\udcff.hdf5", "/data/\\xff.hdf5"),
    ],
)
def test_printable_escapes_what_could_forge_or_repaint_a_line(text: str, shown: str) -> None:
    assert printable(text) == shown


@given(st.text())
def test_printable_output_is_one_printable_line_and_keeps_printable_text(text: str) -> None:
    shown = printable(text)
    assert shown.isprintable()
    if text.isprintable():
        assert shown == text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"\xff\xfe_sb07.hdf5", "\\xff\\xfe_sb07.hdf5"),  # not UTF-8
        (b"2025-10-02T00:12:00_sb07.hdf5\n", "2025-10-02T00:12:00_sb07.hdf5\\n"),
        (b"2025-10-02T00:12:00_SB07.HDF5\x1b[2J", "2025-10-02T00:12:00_SB07.HDF5\\x1b[2J"),
    ],
)
def test_a_rejected_name_is_escaped_once_as_its_path_is(raw: bytes, shown: str) -> None:
    """OPERATOR3 defect 7: the reason quoted a non-UTF-8 name as '\\\\xff\\\\xfe...' (its
    escapes escaped again by repr) beside a path showing '\\xff\\xfe...'."""
    name = os.fsdecode(raw)
    with pytest.raises(MisnamedFileError) as e:
        NameParser().parse("/d/" + name, name)
    assert f"name '{shown}'" in str(e.value)
    assert "\\\\" not in str(e.value)  # no escape is escaped a second time
