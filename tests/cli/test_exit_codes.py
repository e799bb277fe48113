"""The exit-code table in docs/operations.md is the commands' own, and every code in it
is produced by a real invocation here."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsa110_ingest import ensure_products_db
from dsa110_ingest.cli import COMMANDS, COMMON_EXIT_CODES, main
from dsa110_ingest.db import open_index_at

from ..conftest import TINY_SIM_ARGS, Daemon, Site, converter_script, wait_for, write_site

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
EVERY = "every command"


def documented() -> dict[tuple[str, int], str]:
    text = DOCS.read_text()
    table = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for m in re.finditer(r"^\| (every command|`[\w-]+`) \| (\d+) \| (.+?) \|$", table, re.M):
        rows[(m.group(1).strip("`"), int(m.group(2)))] = m.group(3)
    return rows


def declared() -> dict[tuple[str, int], str]:
    rows = {(EVERY, code): meaning for code, meaning in COMMON_EXIT_CODES.items()}
    for name, mod in COMMANDS.items():
        rows.update({(name, code): meaning for code, meaning in mod.EXIT_CODES.items()})
    return rows


def allowed(cmd: str) -> set[int]:
    return set(COMMON_EXIT_CODES) | set(COMMANDS[cmd].EXIT_CODES)


def test_the_docs_table_is_the_commands_table() -> None:
    assert documented() == declared()


def test_the_stale_threshold_in_the_table_is_the_services() -> None:
    from dsa110_ingest.service import STALE_AFTER_S

    assert f"older than {STALE_AFTER_S:.0f} s" in COMMANDS["status"].EXIT_CODES[4]


def test_every_command_is_a_documented_command() -> None:
    doc_cmds = {cmd for cmd, _ in documented()} - {EVERY}
    assert doc_cmds <= set(COMMANDS)


# -- usage errors: exit 2 from every command, before anything runs ----------------------


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_exits_2_on_an_unknown_option(
    cmd: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main([cmd, "--no-such-option"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"dsa110-ingest {cmd}: error: " in err


# -- one real invocation per documented code ---------------------------------------------


@dataclass
class Scenario:
    args: tuple[str, ...]
    code: int
    setup: Callable[[Site, list[Daemon]], None] = lambda site, daemons: None
    stderr: str = ""

    @property
    def cmd(self) -> str:
        return self.args[0]


GROUP = "2025-10-02T00:00:00"


def _one_group(site: Site, *_: object) -> None:
    # no jitter: the group is named after --start
    site.cli(
        "simulate",
        "--out",
        str(site.incoming),
        "--groups",
        "1",
        "--start",
        GROUP,
        "--jitter-seconds",
        "0",
        *TINY_SIM_ARGS,
    )


def _indexed(site: Site, *_: object) -> None:
    _one_group(site)
    site.cli("run", "--rescan")


def _converted(site: Site, *_: object) -> None:
    script = converter_script(site.root / "conv")
    site.config_path.write_text(
        site.config_path.read_text().replace(
            "[convert]\nenabled = false\n",
            f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", '
            '"{inputs}"]\noutput_dir = "ms"\n',
        )
    )
    _one_group(site)
    site.cli("run", "--rescan")


def _foreign_claim(site: Site, *_: object) -> None:
    """Another deployment (its own state_dir, so its own index) claims our output_dir
    first, with its own real `claim-output`."""
    script = converter_script(site.root / "conv")
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", '
        f'"{{inputs}}"]\noutput_dir = "{site.root / "ms"}"\n'
    )
    text = site.config_path.read_text().replace("[convert]\nenabled = false\n", conv)
    site.config_path.write_text(text)
    other = site.root / "other.toml"
    other.write_text(text.replace('state_dir = "state"', 'state_dir = "other-state"'))
    site.cli("--config", str(other), "claim-output")


def _indexed_foreign_claim(site: Site, *_: object) -> None:
    _indexed(site)
    _foreign_claim(site)


def _missing_converter(site: Site, *_: object) -> None:
    site.config_path.write_text(
        site.config_path.read_text().replace(
            "[convert]\nenabled = false\n",
            '[convert]\nbackend = "command"\ncommand = ["/nonexistent/convert", "{output}"]\n',
        )
    )


def _missing_location(site: Site, *_: object) -> None:
    site.incoming.rmdir()


def _products_db(site: Site, *_: object) -> None:
    ensure_products_db(site.cfg.products_db).close()


def _running(site: Site, daemons: list[Daemon]) -> None:
    d = Daemon(site)
    daemons.append(d)
    d.wait_ready()
    wait_for(lambda: _heartbeat(site) is not None, 30, "no heartbeat")


def _heartbeat(site: Site) -> object:
    if not site.cfg.hdf5_db.exists():
        return None
    with open_index_at(site.cfg.hdf5_db, readonly=True) as db:
        return db.heartbeat(socket.gethostname())


def _hung(site: Site, daemons: list[Daemon]) -> None:
    """A real daemon that stops beating: SIGSTOP, and its last beat made old."""
    _running(site, daemons)
    pid = daemons[0].proc.pid
    os.kill(pid, signal.SIGSTOP)
    with open_index_at(site.cfg.hdf5_db) as db:
        hb = db.heartbeat(socket.gethostname())
        assert hb is not None and hb.hostname is not None and hb.started_at is not None
        db.write_heartbeat(hb.node, pid, hb.hostname, hb.started_at, time.time() - 600, {})


def _killed(site: Site, daemons: list[Daemon]) -> None:
    _running(site, daemons)
    daemons[0].kill()


SCENARIOS = {
    "run-rescan-ok": Scenario(("run", "--rescan"), 0, _one_group),
    "run-refuses-missing-converter": Scenario(
        ("run", "--rescan"), 1, _missing_converter, "/nonexistent/convert is not an executable"
    ),
    "status-running": Scenario(("status",), 0, _running, ""),
    "status-never-ran": Scenario(("status",), 3),
    "status-killed": Scenario(("status", "--json"), 3, _killed),
    "status-hung": Scenario(("status",), 4, _hung),
    "convert-nothing-to-do": Scenario(("convert", GROUP), 0, _converted, "already converted"),
    "convert-unknown-group": Scenario(("convert", GROUP), 1, stderr="is not in"),
    "convert-backend-missing": Scenario(
        ("convert", GROUP), 1, _missing_converter, "is not an executable file"
    ),
    "convert-output-dir-claimed": Scenario(
        ("convert", GROUP), 1, _indexed_foreign_claim, "belongs to another index"
    ),
    "claim-output-made": Scenario(("claim-output",), 0, _converted, "already claimed"),
    "claim-output-foreign": Scenario(
        ("claim-output",), 1, _foreign_claim, "belongs to another index"
    ),
    "retry-nothing-to-do": Scenario(("retry", GROUP), 0, _converted, "nothing to do"),
    "retry-unknown-group": Scenario(("retry", GROUP), 1, stderr="has no conversion job"),
    "doctor-ok": Scenario(("doctor",), 0),
    "doctor-fail": Scenario(("doctor",), 1, _missing_location, "mount or create it"),
    "migrate-nothing": Scenario(("migrate",), 0, _products_db, "nothing to migrate"),
    "migrate-no-db": Scenario(("migrate",), 1, stderr="does not exist"),
    "groups-ok": Scenario(("groups",), 0, _indexed, ""),
    "groups-no-db": Scenario(("groups",), 1, stderr="run the daemon or `dsa110-ingest index-hdf5`"),
}


def test_every_documented_code_has_a_scenario() -> None:
    exercised = {(s.cmd, s.code) for s in SCENARIOS.values()}
    specific = {k for k in declared() if k[0] != EVERY}
    assert specific <= exercised
    assert {s.code for s in SCENARIOS.values()} >= {0, 1}  # 2 and 130 have their own tests


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_exits_with_its_documented_code(name: str, tmp_path: Path) -> None:
    s = SCENARIOS[name]
    site = write_site(tmp_path)
    daemons: list[Daemon] = []
    try:
        s.setup(site, daemons)
        p = site.cli(*s.args, check=False)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                os.kill(d.proc.pid, signal.SIGCONT)
                d.kill()
    assert p.returncode == s.code, f"{s.args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert p.returncode in allowed(s.cmd)
    assert s.stderr in p.stderr + p.stdout
    assert "Traceback" not in p.stderr
    if p.returncode == 1 and s.cmd != "doctor":  # doctor's FAIL lines are on stdout
        assert s.stderr in p.stderr.rstrip().splitlines()[-1]


def _sigint_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_interrupt_exits_130(site: Site) -> None:
    site.cli("simulate", "--out", str(site.incoming), "--groups", "1", "--nants", "2")
    site.cli("run", "--rescan")
    p = subprocess.Popen(
        [sys.executable, "-m", "dsa110_ingest", "events", "--follow"],
        # a follower that ignores the interrupt is made to show where it is stuck
        env={**site.env(), "PYTHONFAULTHANDLER": "1"},
        # as from a terminal: SIGINT at its default. Python keeps an inherited SIG_IGN
        # (a shell's background job), and one loaded CI run's worker had it ignored by
        # the time this test ran (the follower slept on through the signal)
        preexec_fn=_sigint_as_from_a_terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=site.root,
    )
    assert p.stdout is not None and '"group.complete"' in p.stdout.readline()
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        _, err = p.communicate(timeout=30)
        pytest.fail(f"`events --follow` ignored SIGINT for 60 s; its stacks:\n{err}")
    assert p.returncode == 130 and "Traceback" not in err
