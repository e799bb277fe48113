from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from ..conftest import Site, write_site


def converter_script(path: Path, body: str = "") -> Path:
    """A stand-in site converter: writes <output>/inputs.txt listing its inputs."""
    path.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys, time
        out, inputs = sys.argv[1], sys.argv[2:]
        print("converting", len(inputs), "files into", out)
        {body}
        os.makedirs(out)
        with open(os.path.join(out, "inputs.txt"), "w") as f:
            f.write("\\n".join(inputs))
    """)
    )
    path.chmod(0o755)
    return path


def command_site(root: Path, script: Path, extra: str = "") -> Site:
    conv = (
        f'[convert]\nbackend = "command"\ncommand = ["{script}", "{{output}}", "{{inputs}}"]\n'
        'output_dir = "ms"\nbackoff_initial_seconds = 0.2\nbackoff_max_seconds = 0.5\n'
        "lease_seconds = 3\n" + extra
    )
    return write_site(root, convert=conv)


@pytest.fixture
def ok_script(tmp_path: Path) -> Path:
    return converter_script(tmp_path / "convert-ok")
