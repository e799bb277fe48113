"""The storage seam holds: drivers and SQL only in db/, and db/ needs no pipeline stage."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import dsa110_ingest

SRC = Path(dsa110_ingest.__file__).parent
DB = SRC / "db"
DRIVERS = ("sqlite3", "psycopg", "psycopg2", "psycopg_pool")
BACKENDS = ("dsa110_ingest.db.sqlite", "dsa110_ingest.db.postgres")
STAGES = ("ingest", "convert", "service", "cli", "api", "migrate", "demo", "doctor")
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE|PRAGMA\s+\w+)",
    re.S,
)


def _imports(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def _modules() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(SRC.rglob("*.py"))]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_outside_db_no_driver_backend_or_sql() -> None:
    bad = []
    for path, tree in _modules():
        if DB in path.parents:
            continue
        rel = path.relative_to(SRC)
        for name in _imports(tree):
            if any(_within(name, d) for d in DRIVERS + BACKENDS):
                bad.append(f"{rel} imports {name}")
        for node in ast.walk(tree):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and SQL.search(node.value):
                bad.append(f"{rel}:{node.lineno} has SQL {node.value[:40]!r}")
    assert bad == [], "use dsa110_ingest.db's factory and store methods:\n" + "\n".join(bad)


def test_db_imports_no_pipeline_stage() -> None:
    bad = []
    for path, tree in _modules():
        if DB not in path.parents:
            continue
        for name in _imports(tree):
            if any(_within(name, f"dsa110_ingest.{s}") for s in STAGES):
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == [], "db/ must not depend on the pipeline:\n" + "\n".join(bad)


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    # the walkers above would pass vacuously if they found no modules or no imports
    mods = dict(_modules())
    assert any(DB in p.parents for p in mods) and len(mods) > 20
    service = ast.parse((SRC / "service" / "runtime.py").read_text())
    assert "dsa110_ingest.db" in _imports(service)
    sqlite_index = ast.parse((DB / "sqlite" / "index.py").read_text())
    assert "sqlite3" in _imports(sqlite_index)
    assert SQL.search("SELECT path FROM hdf5_file_index") and not SQL.search("select a file")
