from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import Site, converter_script, write_site


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
