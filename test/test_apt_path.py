"""The README's apt install path, run by `make check-apt-path` (slow: apt-get, a new venv with
PyTorch, a colcon build and ~700 tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get needs root")
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs a Debian or Ubuntu system")
@pytest.mark.skipif(
    not Path("/usr/bin/python3").exists(), reason="needs the distribution's /usr/bin/python3"
)
def test_the_readme_apt_install_leaves_the_distribution_packages_alone_and_passes(tmp_path):
    result = subprocess.run(
        [str(ROOT / "scripts" / "check-apt-path.sh")],
        env={**os.environ, "APT_PATH_DIR": str(tmp_path / "apt-path")},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "pip left the distribution's libraries alone" in output
    assert " passed" in output and "[check-apt-path" in output
