"""Mounts that change under a storage location: the old watch would see the covered
folder, not the new filesystem, so the watch is re-armed and a reconcile asked for."""

from __future__ import annotations

import select
from pathlib import Path

import structlog

from dsa110_ingest.ingest.watcher import Watcher

log = structlog.get_logger("dsa110_ingest.service")


class MountWatch:
    """Tells when the mount table changed (``/proc/self/mountinfo`` signals POLLPRI)."""

    def __init__(self, path: str = "/proc/self/mountinfo") -> None:
        self.path = path
        self._f = open(path, "rb")  # noqa: SIM115
        self._poll = select.poll()
        self._poll.register(self._f.fileno(), select.POLLPRI | select.POLLERR)
        self.mounts = self._read()

    def _read(self) -> set[str]:
        self._f.seek(0)
        out = set()
        for line in self._f.read().decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) > 4:
                # field 5 is the mount point, octal-escaped (\040 for a space)
                out.add(parts[4].encode().decode("unicode_escape"))
        return out

    def changed(self) -> set[str]:
        """Mount points added or removed since the last call (empty: nothing changed)."""
        if not self._poll.poll(0):
            return set()
        now = self._read()
        diff = now ^ self.mounts
        self.mounts = now
        return diff

    def close(self) -> None:
        self._f.close()


def affects(mount_point: str, location: Path) -> bool:
    """A mount at ``mount_point`` covers ``location`` or something inside it."""
    m = Path(mount_point)
    return m == location or m in location.parents or location in m.parents


def rearm_changed(mounts: MountWatch, watcher: Watcher) -> None:
    """Re-arm the watch of every location a mount change touched and reconcile at once."""
    changed = mounts.changed()
    if not changed:
        return
    for _, loc in watcher.locations:
        hits = sorted(m for m in changed if affects(m, loc.path))
        if hits:
            log.warning("location.mount_changed", location=loc.name, mounts=hits)
            watcher.rearm(loc.name)
            watcher.request_reconcile(f"mount change at {', '.join(hits)}")
