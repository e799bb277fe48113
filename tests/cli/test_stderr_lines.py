"""Off a terminal with log_format = "json" every stderr line is one JSON object (command
messages and usage errors too), and no line or output shows a PostgreSQL password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsa110_ingest.config import redact_text

from ..conftest import Site, write_site

PW = "S3cretPW"
INDEX = f"postgresql://ingest:{PW}@db.example.org/dsa110_index"
PRODUCTS = f"postgresql://ingest:{PW}@db.example.org:5433/dsa110_products?sslmode=require"


def _json_site(tmp_path: Path) -> Site:
    site = write_site(tmp_path)
    site.config_path.write_text('log_format = "json"\n' + site.config_path.read_text())
    return site


def _objects(stderr: str) -> list[dict]:
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    return [json.loads(line) for line in lines]  # each line one JSON object


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("convert", "2025-10-02T00:00:00"), 1, "is not in"),
        (("retry", "2025-10-02T00:00:00"), 1, "has no conversion job"),
        (("groups", "--bogus"), 2, "unrecognized arguments: --bogus"),
        (("convert", "notatime"), 2, "'notatime' is not an ISO 8601 UTC time"),
        (("groups", "--since", "2025-10-03", "--until", "2025-10-02"), 2, "is later than"),
    ],
)
def test_every_stderr_line_is_json(
    tmp_path: Path, sim_groups, args: tuple[str, ...], code: int, says: str
) -> None:
    site = _json_site(tmp_path)
    sim_groups(site.incoming, n=1)
    site.cli("run", "--rescan", "--no-convert")
    p = site.cli(*args, check=False)
    assert p.returncode == code, p.stderr
    objs = _objects(p.stderr)
    assert any(says in (o.get("message") or o.get("error") or "") for o in objs), p.stderr
    assert all(o["level"] in ("info", "warning", "error") and "timestamp" in o for o in objs)


def test_a_usage_error_is_text_with_the_console_format(tmp_path: Path) -> None:
    site = _json_site(tmp_path)
    p = site.cli("groups", "--bogus", "--log-format", "console", check=False)
    assert p.returncode == 2
    assert p.stderr.startswith("dsa110-ingest groups: error: unrecognized arguments: --bogus")


def _pg_site(tmp_path: Path) -> Site:
    site = write_site(tmp_path)
    site.config_path.write_text(
        f'hdf5_db = "{INDEX}"\nproducts_db = "{PRODUCTS}"\n' + site.config_path.read_text()
    )
    return site


def test_config_never_prints_a_password(tmp_path: Path) -> None:
    site = _pg_site(tmp_path)
    toml = site.cli("config").stdout
    assert PW not in toml
    assert 'hdf5_db = "postgresql://ingest@db.example.org/dsa110_index"' in toml
    assert "(password not shown: keep it in ~/.pgpass)" in toml
    out = site.cli_json("config", "--json")
    assert PW not in json.dumps(out)
    assert out["settings"]["products_db"] == (
        "postgresql://ingest@db.example.org:5433/dsa110_products?sslmode=require"
    )
    assert out["passwords_not_shown"] == ["hdf5_db", "products_db"]


@pytest.mark.parametrize("to", [True, False], ids=["migrate --to", "migrate"])
def test_migrate_on_a_postgresql_config_names_the_uri_without_password(
    tmp_path: Path, to: bool
) -> None:
    site = _pg_site(tmp_path)
    extra = ("--to", f"postgresql://u:{PW}@h/x", "--products-to", f"postgresql://u:{PW}@h/y")
    p = site.cli("migrate", *(extra if to else ()), check=False)
    assert p.returncode == 1
    assert PW not in p.stderr and "postgresql:/d" not in p.stderr
    (line,) = _objects(p.stderr)
    assert line["error"].startswith(
        "products_db is a PostgreSQL database (postgresql://ingest@db.example.org:5433/"
        "dsa110_products?sslmode=require), and `migrate` reads SQLite files"
    )
    assert "--hdf5-db FILE --products-db FILE" in line["error"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"to {INDEX}, then", "to postgresql://ingest@db.example.org/dsa110_index, then"),
        (
            f"index postgresql:/ingest:{PW}@/db/x is gone",  # a URI a path join mangled
            "index postgresql:/ingest@/db/x is gone",
        ),
        (
            f"(postgres://a@h1,h2:5/d?password={PW}&sslmode=require).",
            "(postgres://a@h1,h2:5/d?sslmode=require).",
        ),
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
        ("no uri: a:b@c", "no uri: a:b@c"),
    ],
)
def test_redact_text(text: str, shown: str) -> None:
    assert redact_text(text) == shown
