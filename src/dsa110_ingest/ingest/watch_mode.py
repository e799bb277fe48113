"""Which watch a storage location gets: inotify, or polling where inotify is blind.

inotify sees only writes made through this kernel; on network and FUSE filesystems a
writer on another host changes files without an event, so ``auto`` polls there.
"""

from __future__ import annotations

from pathlib import Path

from dsa110_ingest.config import StorageLocation

# inotify sees only local writes on these; a writer on another host goes unseen
POLL_FSTYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuseblk",
        "9p",
        "sshfs",
        "glusterfs",
        "ceph",
        "lustre",
        "gpfs",
        "afs",
        "davfs",
    }
)


def mount_of(path: Path, mounts_file: str = "/proc/self/mounts") -> tuple[str, str]:
    """(mount point, fs type) of the filesystem holding ``path``."""
    best = ("/", "unknown")
    p = str(path.resolve())
    try:
        with open(mounts_file, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                    best = (mnt, parts[2])
    except OSError:
        pass
    return best


def needs_polling(fstype: str) -> bool:
    return fstype in POLL_FSTYPES or fstype.startswith("fuse")


def choose_mode(loc: StorageLocation, mounts_file: str = "/proc/self/mounts") -> tuple[str, str]:
    """(mode, fs type): ``auto`` polls where inotify is blind."""
    _, fstype = mount_of(loc.path, mounts_file)
    if loc.watch != "auto":
        return loc.watch, fstype
    return ("poll" if needs_polling(fstype) else "inotify"), fstype
