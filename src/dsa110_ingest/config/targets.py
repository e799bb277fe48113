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


_URI_IN_TEXT = re.compile(r"(?i)\bpostgres(?:ql)?:/[^\s'\"`;)]*")


def _redact_token(token: str) -> str:
    body = token.rstrip(".,:")  # a sentence's punctuation after the URI
    head, _, rest = body.partition(":")
    slashes = len(rest) - len(rest.lstrip("/"))
    # also a URI a path join collapsed to one slash: the password must still go
    clean = redact_db(f"{head}://{rest[slashes:]}").replace("://", ":" + "/" * slashes, 1)
    return clean + token[len(body) :]


def redact_text(text: str) -> str:
    """``text`` with every PostgreSQL URI in it shown without its password."""
    if "postgres" not in text.lower():
        return text
    return _URI_IN_TEXT.sub(lambda m: _redact_token(m.group(0)), text)
