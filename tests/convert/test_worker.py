"""One conversion in the worker (convert/worker.py), in this process and as the
``python -m`` child the executors start: the output appears whole or not at all, an
output already in place is kept or moved aside, each failure leaves with its class."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dsa110_ingest.convert import worker
from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.errors import ConversionError, PermanentConversionError, TransientConversionError

from ..conftest import SMALL, converter_script
from .conftest import SlowConverter, retarget


def _leftovers(req: ConversionRequest) -> list[str]:
    """Hidden names beside the output: temporaries, a replaced MS not removed."""
    return sorted(p.name for p in Path(req.output).parent.glob(".*"))


def test_the_output_is_renamed_into_place_with_its_recipe(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    req = retarget(group_request, tmp_path)
    out = worker.run(req)
    assert (out["ms_path"], out["skipped"]) == (req.output, False)
    written = (Path(req.output) / "inputs.txt").read_text().splitlines()
    assert written == [f.path for f in req.by_frequency]
    assert out["phasing"] == "meridian" and out["n_integrations"] == SMALL.ntimes
    assert out["pointing_dec_source"] == "file" and out["flagged_subband_integrations"] == {}
    assert _leftovers(req) == []


def test_a_valid_output_in_place_is_kept_and_force_replaces_it(
    group_request: ConversionRequest,
    tmp_path: Path,
    slow_converter: Any,
) -> None:
    conv: SlowConverter = slow_converter(0)
    req = retarget(group_request, tmp_path, conv.script)
    assert worker.run(req)["skipped"] is False and conv.runs() == 1
    again = worker.run(req)
    assert again["skipped"] is True and again["ms_path"] == req.output and conv.runs() == 1
    assert again["phasing"] == "meridian"  # what ms_index learns, also for a kept MS
    forced = worker.run(req, force=True)
    assert forced["skipped"] is False and conv.runs() == 2
    assert _leftovers(req) == []


def test_a_failed_force_leaves_the_old_output_whole(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    req = retarget(group_request, tmp_path)
    worker.run(req)
    before = (Path(req.output) / "inputs.txt").read_text()
    bad = converter_script(tmp_path / "bad", "sys.exit(7)")
    with pytest.raises(ConversionError, match="status 7"):
        worker.run(retarget(req, tmp_path, bad), force=True)
    assert (Path(req.output) / "inputs.txt").read_text() == before
    assert _leftovers(req) == []


def test_an_invalid_leftover_is_moved_aside_not_destroyed(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    req = retarget(group_request, tmp_path)
    Path(req.output).mkdir(parents=True)  # an empty directory is no product
    out = worker.run(req)
    assert out["skipped"] is False and (Path(req.output) / "inputs.txt").exists()
    (aside,) = Path(req.output).parent.glob("g.ms.invalid-*")
    assert aside.is_dir()


def test_temporaries_of_a_dead_worker_are_cleared(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    req = retarget(group_request, tmp_path)
    stale = Path(req.output).parent / ".g.ms.tmp-99999"
    stale.mkdir(parents=True)
    (stale / "half").write_text("x")
    worker.run(req)
    assert _leftovers(req) == []


@pytest.mark.parametrize(
    ("body", "cls", "needle"),
    [
        ("sys.exit(0)", ConversionError, "exited 0 but wrote no"),
        ("sys.exit(66)", PermanentConversionError, "data of"),
        ("sys.exit(75)", TransientConversionError, "temporary failure of the node"),
    ],
)
def test_a_failed_conversion_leaves_nothing_and_keeps_its_class(
    group_request: ConversionRequest, tmp_path: Path, body: str, cls: type, needle: str
) -> None:
    script = converter_script(tmp_path / "c", body)
    req = retarget(group_request, tmp_path, script)
    with pytest.raises(ConversionError, match=needle) as err:
        worker.run(req)
    assert type(err.value) is cls
    assert not Path(req.output).exists() and _leftovers(req) == []


def test_an_output_folder_that_cannot_be_made_names_the_fix(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    (tmp_path / "ms").write_text("a file where the folder should be")
    with pytest.raises(ConversionError, match=r"cannot create output folder .* writable"):
        worker.run(retarget(group_request, tmp_path))


def test_a_backend_unknown_here_is_the_nodes_condition(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    req = replace(retarget(group_request, tmp_path), backend="no-such-backend")
    with pytest.raises(TransientConversionError, match="unknown to this installation"):
        worker.run(req)


def _child(req: ConversionRequest) -> tuple[int, dict[str, Any]]:
    p = subprocess.run(
        [sys.executable, "-m", "dsa110_ingest.convert.worker"],
        input=json.dumps(req.to_json()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = p.stdout.splitlines()  # stdout carries the result and nothing else
    return p.returncode, json.loads(line)


def test_the_child_process_says_its_outcome_in_one_json_line(
    group_request: ConversionRequest, tmp_path: Path
) -> None:
    req = retarget(group_request, tmp_path)
    code, out = _child(req)
    assert code == 0 and out["ms_path"] == req.output
    code, out = _child(replace(req, output=str(tmp_path / "other.ms"), backend="nope"))
    assert code == 3 and out["kind"] == "node" and "unknown to this installation" in out["error"]
