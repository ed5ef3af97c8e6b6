"""Every command reports bad input in one stderr line that names the file or option, with
exit status 2 for a bad option or configuration value and 1 for input that cannot be used
(a missing or unreadable file, a bag, checkpoint or dataset that cannot be used), and never
a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
TRAIN_CONFIG = REPOSITORY / "config" / "train_demo.yaml"


@pytest.fixture(scope="module")
def bad(tmp_path_factory, clip_bag: Path, synthetic_checkpoint: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    files = {
        "missing": root / "missing.yaml",
        "directory": root / "a_directory",
        "empty": root / "empty.safetensors",
        "garbage": root / "garbage.bin",
        "list": root / "list.yaml",
        "broken": root / "broken.yaml",
        "text": root / "text.safetensors",
        "out": root / "out",
    }
    files["directory"].mkdir()
    files["out"].mkdir()
    files["empty"].write_bytes(b"")
    files["garbage"].write_bytes(bytes(range(256)) * 8)
    files["list"].write_text("- a\n- b\n")
    files["broken"].write_text("model: [\n  preset: x\n")
    files["text"].write_text("hello\n")
    return {**files, "clip": clip_bag, "checkpoint": synthetic_checkpoint}


# (command line with {name} placeholders, exit status, text the line must contain)
CASES = {
    "infer missing bag": ("bag infer {missing} {out}/i1 --checkpoint {checkpoint}", 1, "{missing}"),
    "infer bag is a file": (
        "bag infer {garbage} {out}/i2 --checkpoint {checkpoint}",
        1,
        "{garbage}",
    ),
    "infer output under a file": (
        "bag infer {clip} {garbage}/x --checkpoint {checkpoint}",
        1,
        "{garbage}/x",
    ),
    "infer text checkpoint": ("bag infer {clip} {out}/i3 --checkpoint {text}", 1, "{text}"),
    "infer missing checkpoint": (
        "bag infer {clip} {out}/i4 --checkpoint {missing}",
        2,
        "--checkpoint",
    ),
    "infer bad storage": (
        "bag infer {clip} {out}/i5 --checkpoint {checkpoint} --storage foo",
        2,
        "--storage",
    ),
    "infer bad device": (
        "bag infer {clip} {out}/i6 --checkpoint {checkpoint} --device tpu",
        2,
        "--device",
    ),
    "play missing bag": ("bag play {missing}", 1, "{missing}"),
    "play zero rate": ("bag play {clip} --rate 0", 2, "--rate"),
    "play bad remap": ("bag play {clip} --remap nothing", 2, "--remap"),
    "play remap to a bad name": ("bag play {clip} --remap /camera/image_raw:=a\\ b", 2, "--remap"),
    "play offset past the end": ("bag play {clip} --start-offset 100", 2, "--start-offset"),
    "play negative clock": ("bag play {clip} --clock -5", 2, "--clock"),
    "record output under a file": ("bag record {garbage}/x --duration 1", 1, "{garbage}/x"),
    "record negative duration": ("bag record {out}/r1 --duration -1", 2, "--duration"),
    "eval missing bag": ("bag eval {clip} {missing} --report {out}/e1", 1, "{missing}"),
    "eval report under a file": ("bag eval {clip} {clip} --report {garbage}/r", 1, "{garbage}/r"),
    "make missing folder": ("bag make {out}/m1 --images {missing}", 1, "{missing}"),
    "make no frames": ("bag make {out}/m2 --synthetic 0", 2, "--synthetic"),
    "make negative fps": ("bag make {out}/m3 --synthetic 2 --fps -1", 2, "--fps"),
    "make jpeg quality": (
        "bag make {out}/m4 --synthetic 2 --compressed --jpeg-quality 500",
        2,
        "--jpeg-quality",
    ),
    "make output under a file": ("bag make {garbage}/x --synthetic 2", 1, "{garbage}/x"),
    "make unknown ros distro": (
        "bag make {out}/m5 --synthetic 2 --ros-distro foxy",
        2,
        "--ros-distro",
    ),
    "record unknown ros distro": ("bag record {out}/r2 --ros-distro iron", 2, "--ros-distro"),
    "infer unknown ros distro": (
        "bag infer {clip} {out}/i7 --checkpoint {checkpoint} --ros-distro rolling",
        2,
        "--ros-distro",
    ),
    "reindex missing bag": ("bag reindex {missing}", 1, "{missing}"),
    "eval missing checkpoint": ("eval {missing} --out {out}/v1", 1, "{missing}"),
    "eval garbage checkpoint": ("eval {garbage} --out {out}/v2", 1, "{garbage}"),
    "eval config is a list": ("eval {checkpoint} --out {out}/v3 --config {list}", 2, "{list}"),
    "eval config is broken": ("eval {checkpoint} --out {out}/v4 --config {broken}", 2, "{broken}"),
    "eval severities": (
        f"eval {{checkpoint}} --out {{out}}/v5 --config {TRAIN_CONFIG} --severities a,b",
        2,
        "--severities",
    ),
    "train missing config": ("train {missing}", 1, "{missing}"),
    "train config is a directory": ("train {directory}", 1, "{directory}"),
    "train config is a list": ("train {list}", 2, "{list}"),
    "train config is broken": ("train {broken}", 2, "{broken}"),
    "train config is binary": ("train {garbage}", 2, "{garbage}"),
    "train bad override": (f"train {TRAIN_CONFIG} --set nonsense", 2, "nonsense"),
    "train override not yaml": (f"train {TRAIN_CONFIG} --set optim.epochs=[1", 2, "optim.epochs"),
    "train missing dataset": (
        f"train {TRAIN_CONFIG} --set data.root={{missing}} --output-dir {{out}}/t1",
        1,
        "{missing}",
    ),
    "synth output is a file": ("synth {garbage} --frames 2 --size 32x32", 1, "{garbage}"),
    "synth negative frames": ("synth {out}/s1 --frames -4 --size 32x32", 2, "--frames"),
    "synth bad size": ("synth {out}/s2 --frames 2 --size 3x", 2, "--size"),
    "convert missing": (
        "convert-official {missing} --dataset mtlesd -o {out}/c1.safetensors",
        1,
        "{missing}",
    ),
    "convert garbage": (
        "convert-official {garbage} --dataset mtlesd -o {out}/c2.safetensors",
        1,
        "{garbage}",
    ),
    "convert bad dataset": (
        "convert-official {checkpoint} --dataset nope -o {out}/c3.safetensors",
        2,
        "--dataset",
    ),
}


def run_case(case: str, bad: dict[str, Path]) -> tuple[list[str], subprocess.CompletedProcess]:
    import shlex

    command = CASES[case][0]
    argv = [part.format(**bad) for part in shlex.split(command)]
    completed = subprocess.run(
        [sys.executable, "-m", "endoarss_ros.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=REPOSITORY,
    )
    return argv, completed


@pytest.fixture(scope="module")
def results(bad: dict[str, Path]) -> dict[str, tuple[list[str], subprocess.CompletedProcess]]:
    """Every case's process, a few at a time: each spends most of its life importing."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case: pool.submit(run_case, case, bad) for case in CASES}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line(case: str, bad: dict[str, Path], results) -> None:
    _, status, named = CASES[case]
    argv, completed = results[case]
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert "Traceback" not in completed.stderr, completed.stderr
    assert len(lines) == 1, completed.stderr
    assert completed.returncode == status, completed.stderr
    assert named.format(**bad) in lines[0]
    assert lines[0].startswith(f"endoarss {argv[0]}")
