"""Files shipped inside the wheel: the commented example config and the systemd unit
(``dsa110-ingest config --example``, ``dsa110-ingest systemd-unit``). The repository's
``config/ingest.toml`` and ``systemd/dsa110-ingest.service`` are links to these."""

from __future__ import annotations

from importlib.resources import files

EXAMPLE_CONFIG = "ingest.toml"
SYSTEMD_UNIT = "dsa110-ingest.service"


def read(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
