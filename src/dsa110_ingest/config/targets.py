"""Database settings: a SQLite file (a path) or a libpq URI selecting PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path


def is_db_uri(value: object) -> bool:
    """A libpq URI (``postgresql://`` or ``postgres://``, unix sockets included as
    ``postgresql:///db?host=/run/postgresql``): kept as written, never made a path."""
    return isinstance(value, str) and value.lower().startswith(("postgresql://", "postgres://"))


def redact_db(value: Path | str) -> str:
    """A database setting for people to read: a URI without its password."""
    s = str(value)
    if not is_db_uri(s):
        return s
    head, rest = s.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" in netloc:
        cred, host = netloc.rsplit("@", 1)
        netloc = f"{cred.split(':', 1)[0]}@{host}"
    tail = re.sub(r"(?i)(^|[?&])password=[^&]*&?", r"\1", tail).rstrip("?&")
    return f"{head}://{netloc}{sep}{tail}"
