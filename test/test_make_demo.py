"""`make demo`, the README's first command, run as written from the repository root (its
outputs go to a temporary DEMO_DIR instead of demo/): set-up (a no-op once done), the shipped
model scored on unseen frames, then the node fed by a camera process, both stopped cleanly."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_make_demo_scores_the_model_and_runs_the_node(tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "demo"],
        cwd=ROOT,
        env={**os.environ, "DEMO_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    metrics = json.loads((tmp_path / "report_unseen" / "metrics.json").read_text())["metrics"]
    # The README's claims for `make demo` (checkpoints/demo/README.md has the measured values).
    assert metrics["activity"]["accuracy"] >= 0.95
    assert metrics["segmentation"]["miou_no_background"] >= 0.6
    overlays = list((tmp_path / "live").glob("*.png"))
    assert overlays, output
    assert re.search(r"\[demo\] report: ", output), output
