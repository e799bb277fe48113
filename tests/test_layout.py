"""The layout holds: drivers and SQL only in db/, db/ needs no pipeline stage, stores are
built only by the factory, and no module or function outgrows what a reader takes in."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import dsa110_ingest

SRC = Path(dsa110_ingest.__file__).parent
DB = SRC / "db"
DRIVERS = ("sqlite3", "psycopg", "psycopg2", "psycopg_pool")
BACKENDS = ("dsa110_ingest.db.sqlite", "dsa110_ingest.db.postgres")
# all that db/ may import of the package: itself and the leaves every layer shares
# (an allow-list, so a new pipeline module is forbidden without being named here)
DB_MAY_IMPORT = ("dsa110_ingest.db", "dsa110_ingest.errors", "dsa110_ingest.naming")
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


def _pipeline_import(name: str) -> bool:
    """Whether db/ importing ``name`` would make it depend on the pipeline."""
    ours = _within(name, "dsa110_ingest")
    return ours and not any(_within(name, m) for m in DB_MAY_IMPORT) and name != "dsa110_ingest"


def test_db_imports_no_pipeline_stage() -> None:
    bad = []
    for path, tree in _modules():
        if DB not in path.parents:
            continue
        for name in _imports(tree):
            if _pipeline_import(name):
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == [], "db/ must not depend on the pipeline:\n" + "\n".join(bad)


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    # the walkers above would pass vacuously if they found no modules or no imports
    mods = dict(_modules())
    assert any(DB in p.parents for p in mods) and len(mods) > 20
    service = ast.parse((SRC / "service" / "runtime.py").read_text())
    assert "dsa110_ingest.db" in _imports(service)
    sqlite_index = ast.parse((DB / "sqlite" / "index" / "__init__.py").read_text())
    assert "sqlite3" in _imports(sqlite_index)
    assert SQL.search("SELECT path FROM hdf5_file_index") and not SQL.search("select a file")
    assert _pipeline_import("dsa110_ingest.events") and _pipeline_import("dsa110_ingest.ingest.x")
    assert not _pipeline_import("dsa110_ingest.db.records") and not _pipeline_import("json")


# -- sizes: no module over 400 lines, no function over 80 ----------------------------
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# Functions allowed over the limit, each with its length today (it may shrink, not grow)
# and why splitting it is not (yet) worth it. An entry no longer needed fails the test:
# delete it.
FUNCTION_EXCEPTIONS: dict[str, tuple[int, str]] = {}
# Modules allowed over the limit, same rules. None today.
MODULE_EXCEPTIONS: dict[str, tuple[int, str]] = {}


def oversized(rel: str, source: str) -> list[tuple[str, int, int]]:
    """(``module`` or ``module::function``, its length in lines, the limit) for what in
    one module's source is over its limit; a method is named ``Class.method``, a nested
    function ``outer.inner``. A function's length runs from its ``def`` (decorators not
    counted) to its last line, docstring and comments included."""
    out = []
    n = len(source.splitlines())
    if n > MAX_MODULE_LINES:
        out.append((rel, n, MAX_MODULE_LINES))

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    length = (child.end_lineno or child.lineno) - child.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        out.append((f"{rel}::{name}", length, MAX_FUNCTION_LINES))
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source, rel), "")
    return out


def size_violations(sources: dict[str, str]) -> list[str]:
    """What is too long in ``sources`` (relative path -> text) given the exceptions above,
    and every exception no longer needed."""
    allowed = {**FUNCTION_EXCEPTIONS, **MODULE_EXCEPTIONS}
    bad, used = [], set()
    for rel, source in sorted(sources.items()):
        for name, length, limit in oversized(rel, source):
            if name in allowed and length <= allowed[name][0]:
                used.add(name)
                continue
            what = "lines" if "::" not in name else "lines (a function)"
            bad.append(f"{name}: {length} {what}, limit {limit}; split it into named steps")
    bad += [f"{name}: exception no longer needed; delete it" for name in allowed.keys() - used]
    return bad


def test_no_module_or_function_is_too_long() -> None:
    sources = {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}
    assert len(sources) > 20
    bad = size_violations(sources)
    assert bad == [], "\n".join(bad)


def test_the_size_check_catches_a_401_line_module_and_an_81_line_function() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(79))  # def line + 79 + return = 81
    long_fn = f"def long(a: int) -> int:\n{body}    return a\n"
    assert oversized("m.py", long_fn) == [("m.py::long", 81, 80)]
    assert oversized("m.py", long_fn.replace("    x78 = 78\n", "")) == []  # 80: fine
    method = "class C:\n" + "".join("    " + line + "\n" for line in long_fn.splitlines())
    assert oversized("m.py", method) == [("m.py::C.long", 81, 80)]
    module = "".join(f"X{i} = {i}\n" for i in range(401))
    assert oversized("m.py", module) == [("m.py", 401, 400)]
    assert oversized("m.py", module[: module.index("X400")]) == []  # 400: fine
    # the exceptions: one may shrink, not grow, and a stale one is reported
    name = "convert/native/backend.py"
    FUNCTION_EXCEPTIONS[f"{name}::write_ms"] = (99, "an example")
    try:
        grown = "def write_ms() -> None:\n" + "    pass\n" * 99  # 100 lines > the 99 allowed
        assert size_violations({name: grown})[0].startswith(f"{name}::write_ms: 100 lines")
        assert size_violations({name: "def write_ms() -> None:\n    pass\n"}) == [
            f"{name}::write_ms: exception no longer needed; delete it"
        ]
    finally:
        del FUNCTION_EXCEPTIONS[f"{name}::write_ms"]
