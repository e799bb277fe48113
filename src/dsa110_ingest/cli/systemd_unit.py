"""``dsa110-ingest systemd-unit``: the systemd unit shipped in the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsa110_ingest import unit_fit
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
SHIPPED_METRICS_NOTE = (
    "# metrics are served on localhost by default; widen in a drop-in for a remote Prometheus\n"
)
SHIPPED_IP_FILTER = SHIPPED_METRICS_NOTE + "IPAddressDeny=any\nIPAddressAllow=localhost\n"


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
        unit = fit_sandbox(unit, cfg, args.executable or this_executable())
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


def _comment(*lines: str) -> str:
    return "".join(f"# {line}\n" for line in lines)


def fit_sandbox(unit: str, cfg: Config, executable: str) -> str:
    """Relax what the config needs and say why in the unit (see unit_fit's docstring)."""
    used = unit_fit.used_paths(cfg, executable)
    home = unit_fit.paths_under(used, unit_fit.HOME_DIRS)
    if home:
        unit = unit.replace(
            "ProtectHome=yes\n",
            _comment(
                "the config uses paths that ProtectHome=yes would hide:",
                *home,
                "read-only keeps them readable (those written are in ReadWritePaths=)",
            )
            + "ProtectHome=read-only\n",
        )
    tmp = unit_fit.paths_under(used, unit_fit.TMP_DIRS)
    if tmp:
        unit = unit.replace(
            "PrivateTmp=yes\n",
            _comment(
                "the config uses paths that PrivateTmp=yes would replace by an empty /tmp:", *tmp
            )
            + "PrivateTmp=no\n",
        )
    peers = unit_fit.remote_peers(cfg)
    names = [f"{p.what} {p.host}" for p in peers if p.address is None]
    if names:
        return unit.replace(
            SHIPPED_IP_FILTER,
            _comment(
                "no IP filter (IPAddressDeny=): the config names remote hosts by name:",
                *names,
                "IPAddressAllow= takes only addresses; one resolved now would block the host",
                "once its address moves (a standby promoted), and the daemon's own look-ups",
                "need the DNS servers allowed too. To filter anyway, add a drop-in with",
                "IPAddressDeny=any and IPAddressAllow=localhost, their addresses and your",
                "DNS servers (`dsa110-ingest doctor` checks it)",
            ),
        )
    addresses = [f"{p.what} {p.address}" for p in peers]
    listen = cfg.metrics_listen.rpartition(":")[0].strip("[]")
    remote_metrics = (
        _comment(
            f"metrics_listen {cfg.metrics_listen} serves other hosts: add your Prometheus",
            "server's address to IPAddressAllow= (in a drop-in: systemctl edit dsa110-ingest)",
        )
        if listen and not unit_fit.is_local(listen)
        else ""
    )
    allow = " ".join(["localhost", *(str(p.address) for p in peers)])
    return unit.replace(
        SHIPPED_IP_FILTER,
        SHIPPED_METRICS_NOTE
        + (_comment("the config's remote hosts, by address:", *addresses) if addresses else "")
        + remote_metrics
        + f"IPAddressDeny=any\nIPAddressAllow={allow}\n",
    )
