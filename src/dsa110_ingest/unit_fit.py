"""What the systemd unit's sandbox must let through for a config: the remote hosts it
names (the IP filter) and the paths it uses (``ProtectHome=``, ``PrivateTmp=``).

``systemd-unit --config`` shapes the unit with it; ``doctor`` compares an installed unit
(and its drop-ins) against it.

The IP filter: ``IPAddressAllow=`` takes addresses and prefixes, never host names. A host
the config names by address is allowed by address. A host named by name (or a Dask
scheduler read from its file at run time) drops the filter instead of resolving the
name when the unit is written: the address behind a name moves (a standby promoted, a
head node replaced) and the unit would then block the database without a word, and the
daemon's own lookups of the name need the DNS servers allowed too. The rest of the
sandbox stays.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote

from dsa110_ingest.config import Config, is_db_uri, is_under

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# what ProtectHome= hides, and what PrivateTmp= replaces with an empty folder
HOME_DIRS = ("/home", "/root", "/run/user")
TMP_DIRS = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class Peer:
    """A remote host the daemon connects to: ``what`` names the setting."""

    what: str
    host: str
    address: str | None  # the IP literal as written; None: a name, resolved at run time


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def is_local(host: str) -> bool:
    """A unix socket, this host's loopback, or libpq's default (the local socket)."""
    if not host or host.startswith("/") or host.startswith("@") or host.lower() in LOCAL_NAMES:
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def _hostport(part: str) -> str:
    if part.startswith("["):
        return part[1 : part.find("]")]
    return part.rsplit(":", 1)[0] if part.count(":") == 1 else part


def pg_hosts(uri: str) -> list[str]:
    """The hosts of a libpq URI: ``host[:port][,host[:port]]`` and ``?host=``/``hostaddr=``."""
    rest = uri.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    netloc, _, netloc_query = netloc.partition("?")
    query = tail.partition("?")[2] or netloc_query
    params = parse_qs(query)
    hosts = [unquote(_hostport(p)) for p in netloc.rsplit("@", 1)[-1].split(",")]
    if params.get("host") or params.get("hostaddr"):
        # the parameters win over the authority part (libpq)
        hosts = [
            h for key in ("host", "hostaddr") for v in params.get(key, []) for h in v.split(",")
        ]
    return hosts


def _dask_host(address: str) -> str:
    _, _, hostport = address.rpartition("://")
    return _hostport(hostport.split("/", 1)[0])


def remote_peers(cfg: Config) -> list[Peer]:
    """The remote hosts the config names: PostgreSQL servers, the Dask scheduler."""
    named: list[tuple[str, str]] = []
    for key in ("hdf5_db", "products_db"):
        value = getattr(cfg, key)
        if is_db_uri(value):
            named += [(key, h) for h in pg_hosts(str(value))]
    c = cfg.convert
    if c.executor == "dask" and c.dask_scheduler:
        named.append(("[convert] dask_scheduler", _dask_host(c.dask_scheduler)))
    out = [Peer(what, h, h if _ip(h) else None) for what, h in named if not is_local(h)]
    if c.executor == "dask" and c.dask_scheduler_file:
        out.append(
            Peer("[convert] dask_scheduler_file", f"the address in {c.dask_scheduler_file}", None)
        )
    return out


def used_paths(cfg: Config, executable: str | None = None) -> list[tuple[str, Path]]:
    """Every path the daemon reads or writes, with the setting that names it."""
    paths: list[tuple[str, Path | None]] = [
        ("the config file", cfg.config_file),
        ("hdf5_db", cfg.hdf5_db if isinstance(cfg.hdf5_db, Path) else None),
        ("products_db", cfg.products_db if isinstance(cfg.products_db, Path) else None),
        ("[convert] output_dir", cfg.convert.output_dir),
        ("log_file", cfg.log_file),
        ("events_jsonl", cfg.events_jsonl),
        ("the executable", Path(executable) if executable else None),
    ]
    if cfg.sources.get("state_dir", "").startswith("file "):
        paths.append(("state_dir", cfg.state_dir))
    if cfg.convert.dask_scheduler_file:
        paths.append(("[convert] dask_scheduler_file", Path(cfg.convert.dask_scheduler_file)))
    paths += [(f"location {loc.name}", loc.path) for loc in cfg.storage_locations]
    return [(what, p) for what, p in paths if p is not None]


def paths_under(used: Iterable[tuple[str, Path]], dirs: tuple[str, ...]) -> list[str]:
    """``what = path`` for each used path inside one of ``dirs``."""
    return [f"{what} {p}" for what, p in used if any(is_under(str(p), d) for d in dirs)]


def resolve(host: str) -> list[str]:
    """The addresses a name has now (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def allowed(address: str, allow: Iterable[str]) -> bool:
    """Whether an IPAddressAllow= list lets ``address`` through."""
    ip = _ip(address)
    if ip is None:
        return False
    for entry in allow:
        if entry == "any" or (entry == "localhost" and ip.is_loopback):
            return True
        if entry == "link-local" and ip.is_link_local:
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


_ASSIGN = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """The unit's settings with its drop-ins (``<unit>.d/*.conf``) applied in systemd's
    order: each key's values in order, an empty assignment clearing the earlier ones."""
    files = [unit, *sorted(Path(f"{unit}.d").glob("*.conf"))]
    out: dict[str, list[str]] = {}
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            m = _ASSIGN.match(line)
            if m is None or line.lstrip().startswith(("#", ";")):
                continue
            key, value = m.groups()
            out[key] = [*out.get(key, []), value] if value else []
    return out


def _last(settings: dict[str, list[str]], key: str, default: str) -> str:
    values = settings.get(key)
    return values[-1].lower() if values else default


def _words(settings: dict[str, list[str]], key: str) -> list[str]:
    return [w for v in settings.get(key, []) for w in v.split()]


def unit_problems(cfg: Config, settings: dict[str, list[str]]) -> list[str]:
    """What an installed unit (``unit_settings``) blocks that this config needs."""
    exec_start = (settings.get("ExecStart") or [""])[-1].split()
    used = used_paths(cfg, exec_start[0].lstrip("-@:+!") if exec_start else None)
    problems = []
    if _last(settings, "ProtectHome", "no") in ("yes", "true", "1", "on", "tmpfs"):
        problems += [
            f"ProtectHome= hides {p}: set ProtectHome=read-only"
            for p in paths_under(used, HOME_DIRS)
        ]
    if _last(settings, "PrivateTmp", "no") in ("yes", "true", "1", "on"):
        problems += [
            f"PrivateTmp=yes hides {p} behind an empty /tmp: set PrivateTmp=no"
            for p in paths_under(used, TMP_DIRS)
        ]
    deny, allow = _words(settings, "IPAddressDeny"), _words(settings, "IPAddressAllow")
    if not deny:
        return problems
    for peer in remote_peers(cfg):
        addresses = [peer.address] if peer.address else resolve(peer.host)
        if peer.address is None and peer.what.endswith("_file"):
            addresses = []
        if addresses and all(allowed(a, allow) for a in addresses):
            continue
        now = f" (now {', '.join(addresses)})" if addresses and peer.address is None else ""
        problems.append(
            f"IPAddressDeny={' '.join(deny)} blocks {peer.what} {peer.host}{now}: "
            "IPAddressAllow= does not list it"
        )
    listen = cfg.metrics_listen.rpartition(":")[0].strip("[]")
    if listen and not is_local(listen) and "any" not in allow:
        problems.append(
            f"IPAddressDeny={' '.join(deny)} blocks scrapes of metrics_listen "
            f"{cfg.metrics_listen} from other hosts: add your Prometheus server's address "
            "to IPAddressAllow="
        )
    return problems


def installed_unit_problems(cfg: Config, units: Iterable[Path]) -> tuple[Path, list[str]] | None:
    """The first of ``units`` that exists, and what it blocks (each with the fix), for
    ``doctor``; None when none is installed."""
    unit = next((u for u in units if u.is_file()), None)
    if unit is None:
        return None
    fix = (
        f"; regenerate the unit (`dsa110-ingest --config {cfg.config_file} systemd-unit`) "
        "or add a drop-in (`systemctl edit dsa110-ingest`)"
    )
    return unit, [f"{unit}: {p}{fix}" for p in unit_problems(cfg, unit_settings(unit))]
