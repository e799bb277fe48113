"""A real conversion: simulated DSA-110 files -> pyuvdata -> a CASA Measurement Set."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from dsa110_ingest.convert import worker
from dsa110_ingest.convert.request import ConversionRequest, InputFile
from dsa110_ingest.simulate import SimParams, plan_groups, write_file
from dsa110_ingest.uvh5 import read_header

casacore_tables = pytest.importorskip("casacore.tables")
P = SimParams(nants=8, nchan=4, ntimes=3)


@pytest.fixture(scope="module")
def group_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("grp")
    (plan,) = plan_groups(1, "2025-10-02T00:00:00", 2.0)
    return [
        write_file(d, t, sb, P, obs_start_unix=plan.start_unix)
        for sb, t in sorted(plan.files.items())
    ]


def _request(files: list[Path], out: Path) -> ConversionRequest:
    inputs = []
    for f in files:
        h = read_header(str(f))
        inputs.append(InputFile(str(f), int(f.name[-7:-5]), h.freq_min_hz, h.n_freqs))
    return ConversionRequest("2025-10-02T00:00:00", tuple(inputs), str(out), "pyuvdata")


def _ms(path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    t = casacore_tables.table
    with t(str(path / "SPECTRAL_WINDOW"), ack=False) as spw:
        assert spw.nrows() == 1
        freqs = spw.getcol("CHAN_FREQ")[0]
    with t(str(path), ack=False) as main:
        return main.nrows(), freqs, main.getcol("DATA")


def test_group_becomes_a_measurement_set_in_frequency_order(
    group_files: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "g.ms"
    result = worker.run(_request(group_files, out))
    assert result["ms_path"] == str(out) and not result["skipped"]
    nrows, freqs, data = _ms(out)
    h = read_header(str(group_files[0]))
    assert nrows == h.n_blts
    assert freqs.size == 16 * P.nchan and np.all(np.diff(freqs) > 0)
    headers = sorted((read_header(str(f)) for f in group_files), key=lambda x: x.freq_min_hz)
    expected = np.concatenate(
        [np.linspace(x.freq_min_hz, x.freq_max_hz, x.n_freqs) for x in headers]
    )
    np.testing.assert_allclose(freqs, expected, rtol=0, atol=1.0)
    assert not list(tmp_path.glob(".g.ms.tmp-*"))

    # shuffled inputs: the same MS (sb00 is the highest band, so subband order would be wrong)
    shuffled = list(group_files)
    random.Random(3).shuffle(shuffled)
    out2 = tmp_path / "g2.ms"
    worker.run(_request(shuffled, out2))
    n2, f2, d2 = _ms(out2)
    assert n2 == nrows
    np.testing.assert_array_equal(f2, freqs)
    np.testing.assert_array_equal(d2, data)


def test_existing_valid_ms_is_skipped_and_invalid_one_is_moved_aside(
    group_files: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "g.ms"
    worker.run(_request(group_files, out))
    again = worker.run(_request(group_files, out))
    assert again["skipped"] is True
    bad = tmp_path / "bad.ms"
    bad.mkdir()
    (bad / "junk").write_text("not a table")
    r = worker.run(_request(group_files, bad))
    assert not r["skipped"] and _ms(bad)[1].size == 64
    assert len(list(tmp_path.glob("bad.ms.invalid-*"))) == 1
