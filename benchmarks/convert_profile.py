"""Where the native writer's CPU time goes, stage by stage, in one fresh worker-like process.

    python benchmarks/convert_profile.py [--nants 64] [--nchan 32] [--ntimes 24]

The conversion runs in a child process (imports included, as the daemon's worker pays
them), with the read-ahead thread and the helper process off so that every CPU second is
charged to the stage that spent it (``time.process_time``; cProfile with the same clock
splits the write).
Written to docs/performance.md ("convert_profile").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: I001
from convert_group import group_args, make_group

from dsa110_ingest.convert.request import ConversionRequest
from dsa110_ingest.tools.simulate import SimParams

CHILD = r"""
import json, sys, time
c = [time.process_time()]
out = {}
def stage(name):
    now = time.process_time()
    out[name] = now - c[0]
    c[0] = now
import numpy, h5py
stage("import numpy, h5py")
import casacore.tables
stage("import python-casacore")
import erfa
stage("import pyerfa")
import cProfile, pstats
from pathlib import Path
from dsa110_ingest.convert import plan as recipe
from dsa110_ingest.convert import pyuvdata_backend
from dsa110_ingest.convert.native import backend
from dsa110_ingest.convert.request import ConversionRequest
stage("import dsa110_ingest")
req = ConversionRequest.from_json(json.loads(sys.stdin.read()))
plan = recipe.plan_for_request(req)
stage("plan from 16 headers (h5py)")
group = backend.plan_group(plan)
stage("group metadata: header, LSTs, phasing (ERFA)")
prof = cProfile.Profile(time.process_time)
prof.enable()
cache = Path(req.output).parent / ".native-ms-templates"  # as the daemon's conversions
info = backend.write_ms(
    group, Path(req.output), read_ahead=0, processes=1, template_cache=cache
)
prof.disable()
total = time.process_time() - c[0]
stats = pstats.Stats(prof).stats
buckets = {
    "write: visibility kernel (phase, conjugate, reorder)": ("ms_block",),
    "write: casacore putcolslice (only when the tile layout checks fail)": ("putcolslice",),
    "write: h5py reads": ("read_rows",),
    "write: MAIN copied from its template, opened, metadata columns": (
        "create_main", "_main_columns",
    ),
    "write: layout probe (casacore writes and flushes the probe cells)": ("open_tiles",),
    "write: subtables": ("write_all",),
}
for name, funcs in buckets.items():
    # cumulative time of the named functions (ms_block: the outer of the two kernels)
    got = [(k[2], v[3]) for k, v in stats.items() if k[2] in funcs]
    out[name] = max(t for _, t in got) if funcs == ("ms_block",) and got else sum(t for _, t in got)
# the tile thread's pwrites are not seen by cProfile (another thread): in the rest
out["write: the rest (tile writes by a thread, weights, SIGMA)"] = total - sum(
    out[n] for n in buckets
)
c[0] = time.process_time()
pyuvdata_backend.finish_ms(Path(req.output), plan, imaging_columns=False)
recipe.verify_ms(Path(req.output), plan)
stage("finish + verify")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pyuvdata", "astropy"))
assert not heavy, heavy
out["_kernel"] = info["kernel"]
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    group_args(ap)
    args = ap.parse_args()
    p = SimParams(nants=args.nants, nchan=args.nchan, ntimes=args.ntimes, npols=args.npols)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        root = Path(d)
        inputs = make_group(root / "in", p)
        req = ConversionRequest("g", tuple(inputs), str(root / "p.ms"), "native")
        runs = []
        for _ in range(2):  # the first warms the page cache and builds the MAIN template
            load = os.getloadavg()[0]
            r = subprocess.run(
                [sys.executable, "-c", CHILD],
                input=json.dumps(req.to_json()).encode(),
                capture_output=True,
                check=True,
            )
            runs.append((json.loads(r.stdout.decode().strip().splitlines()[-1]), load))
            subprocess.run(["rm", "-rf", str(root / "p.ms")], check=True)
    stages, load = runs[-1]
    kernel = stages.pop("_kernel")
    total = sum(stages.values())
    rows = "\n".join(
        f"| {name} | {sec:.2f} | {100 * sec / total:.0f} % |" for name, sec in stages.items()
    )
    body = f"""## Where the native writer's CPU goes (`benchmarks/convert_profile.py`)

One native conversion of a simulated group ({p.nants} antennas, {p.ntimes} integrations,
16 x {p.nchan} channels, {p.npols} polarisations) in a fresh process, read-ahead thread and
helper process off so each CPU second is charged to its stage (`time.process_time`; the
write split with cProfile on the same clock); second of two runs (the first warms the page
cache and builds the MAIN template of this shape, convert/native/mstemplate.py); the
{kernel} kernel (numba runs only for groups of at least 2 GiB of DATA: its load costs a
fresh worker ~0.9 CPU s; a child of the daemon's template has it loaded and always uses it);
neither pyuvdata nor astropy is imported (the script asserts it);
{machine()}, load average {load:.1f} at the start.

| stage | CPU s | share |
|---|---:|---:|
{rows}
| total | {total:.2f} | 100 % |
"""
    print(body)
    write_section("convert_profile", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
