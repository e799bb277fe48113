"""Storage locations: the folders the correlator writes to, and which one holds a path."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from dsa110_ingest.config.tables import TYPE_NAMES, resolve, type_ok
from dsa110_ingest.errors import ConfigError

WATCH_MODES = ("auto", "inotify", "poll")
ROLES = ("incoming", "archive", "staging", "adhoc")

K = TypeVar("K")


def is_under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (both spelled alike: absolute, normalised)."""
    return path == root or path.startswith(root + os.sep)


@dataclass(frozen=True)
class StorageLocation:
    name: str
    path: Path
    role: str = "incoming"
    recursive: bool = False
    watch: str = "auto"
    description: str = ""

    def holds(self, path: str) -> bool:
        """A file at ``path`` belongs here: directly in the folder, or anywhere below it
        when the location is recursive."""
        root = str(self.path)
        if self.recursive:
            return path.startswith(root + os.sep)
        return os.path.dirname(path) == root

    def validate(self, where: str) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"{where}.role must be one of {ROLES}")
        if self.watch not in WATCH_MODES:
            raise ConfigError(f"{where}.watch must be one of {WATCH_MODES}")


def location_holding(
    locations: Iterable[tuple[K, StorageLocation]], path: str
) -> tuple[K, StorageLocation] | None:
    """The (key, location) whose folder holds ``path``; None when no location does. The
    one answer to "which location is this file in" for the indexer, the watcher and
    the migration."""
    return next(((k, loc) for k, loc in locations if loc.holds(path)), None)


def parse_locations(raw: Any, base: Path, where: str) -> tuple[StorageLocation, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: storage_locations must be an array of tables [[...]]")
    locations = tuple(_parse_location(i, t, base, where) for i, t in enumerate(raw))
    names = [loc.name for loc in locations]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{where}: storage location name(s) {sorted(dup)} used twice")
    paths = [loc.path for loc in locations]
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            if a == b or a in b.parents or b in a.parents:
                raise ConfigError(
                    f"{where}: storage locations {a} and {b} overlap; a file must belong "
                    "to exactly one location"
                )
    return locations


def _parse_location(i: int, t: Any, base: Path, where: str) -> StorageLocation:
    if not isinstance(t, dict):
        raise ConfigError(f"{where}: storage_locations[{i}] must be a table")
    loc_fields = {f.name for f in fields(StorageLocation)}
    unknown = set(t) - loc_fields
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)} in storage_locations[{i}]; "
            f"known: {sorted(loc_fields)}"
        )
    for req in ("name", "path"):
        if not isinstance(t.get(req), str) or not t[req]:
            raise ConfigError(f"{where}: storage_locations[{i}] needs a string `{req}`")
    for key, typ in (("role", str), ("watch", str), ("description", str), ("recursive", bool)):
        if key in t and not type_ok(t[key], typ):
            raise ConfigError(f"{where}: storage_locations[{i}].{key} must be {TYPE_NAMES[typ]}")
    loc = StorageLocation(
        name=t["name"],
        path=resolve(Path(t["path"]), base),
        role=t.get("role", "incoming"),
        recursive=t.get("recursive", False),
        watch=t.get("watch", "auto"),
        description=t.get("description", ""),
    )
    loc.validate(f"{where}: storage_locations[{i}]")
    return loc
