"""``dsa110-ingest systemd-unit``: the systemd unit shipped in the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsa110_ingest.cli._common import EXIT_OK
from dsa110_ingest.config import Config

NAME = "systemd-unit"
HELP = "print the systemd unit for this installation"
DESCRIPTION = (
    "Install with: dsa110-ingest --config FILE systemd-unit | sudo tee "
    "/etc/systemd/system/dsa110-ingest.service. With --config, ExecStart= names that file "
    "and ReadWritePaths= its state_dir, database, output_dir and log folders; without, "
    "the shipped defaults (/etc/dsa110-ingest/ingest.toml, /data/ms)."
)
EXIT_CODES: dict[int, str] = {}
SHIPPED_EXEC = "/opt/dsa110-ingest/.venv/bin/dsa110-ingest"
SHIPPED_CONFIG = "/etc/dsa110-ingest/ingest.toml"
SHIPPED_WRITABLE = "ReadWritePaths=-/data/ms"


def NEEDS_CONFIG(args: argparse.Namespace) -> bool:
    """Only a config named on the command line shapes the unit (the environment's
    DSA110_INGEST_CONFIG is the caller's, not the service's)."""
    return "config" in vars(args)


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--exec",
        dest="executable",
        metavar="PATH",
        help="the dsa110-ingest executable for ExecStart= (default: this installation's, "
        f"else {SHIPPED_EXEC})",
    )


def this_executable() -> str:
    exe = Path(sys.executable).with_name("dsa110-ingest")
    return str(exe) if exe.is_file() else SHIPPED_EXEC


def run(cfg: Config | None, args: argparse.Namespace) -> int:
    from dsa110_ingest import data

    unit = data.read(data.SYSTEMD_UNIT).replace(SHIPPED_EXEC, args.executable or this_executable())
    if cfg is not None and cfg.config_file is not None:
        unit = unit.replace(
            f"--config {SHIPPED_CONFIG}", f"--config {_quoted(str(cfg.config_file))}"
        )
        unit = unit.replace(
            SHIPPED_WRITABLE, "ReadWritePaths=" + " ".join(_quoted(f"-{p}") for p in writable(cfg))
        )
    print(unit, end="")
    return EXIT_OK


def writable(cfg: Config) -> list[Path]:
    """The folders the daemon writes, outermost only. Without a configured ``state_dir``
    the service's is systemd's StateDirectory= (STATE_DIRECTORY), already writable: what
    would live in this shell's default state_dir is left out."""
    from dsa110_ingest.config import is_under

    own_state = cfg.sources.get("state_dir", "").startswith("file ")
    wanted = [cfg.state_dir] if own_state else []
    wanted += [Path(db).parent for db in (cfg.hdf5_db, cfg.products_db) if isinstance(db, Path)]
    wanted.append(cfg.convert.output_dir)
    wanted += [p.parent for p in (cfg.log_file, cfg.events_jsonl) if p is not None]
    out: list[Path] = []
    for p in wanted:
        if not own_state and is_under(str(p), str(cfg.state_dir)):
            continue
        if not any(is_under(str(p), str(q)) for q in out):
            out = [q for q in out if not is_under(str(q), str(p))] + [p]
    return out


def _quoted(text: str) -> str:
    """One systemd word: quoted when it holds white space."""
    return f'"{text}"' if any(c.isspace() for c in text) else text
