"""Replay acceptance of the trust signal: real bags (written and read with rosbags), a real tiny
model and the node's own FramePipeline through `bag infer`, scored by `bag eval`.

A synthetic clip the bag tests use nowhere else is made twice, clean and with a segment of strong
over-exposure that the image checks catch. The checkpoint has neither feature statistics nor
calibration, so the image checks alone decide. Clean, the latched level never reaches ERROR; with
the segment it latches ERROR within a few frames of its start, holds it to the segment's end and
clears once the hysteresis has seen enough clean frames; and `bag eval` reports exactly that."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.bags.evaluate import EvalOptions, evaluate_bags
from endoarss_ros.bags.frames import decoded_frames
from endoarss_ros.bags.schema import ACTIVITY, IMAGE, TRUST, stream_qos
from endoarss_ros.bags.storage import BagReader, BagWriter
from endoarss_ros.cli import main
from endoarss_ros.trust.assessment import TrustConfig

FRAMES = 60
SEED = 2024
FIRST, LAST = 20, 34
ARTEFACT = f"over_exposure:{FIRST}:{LAST}:5"
OK, ERROR = 0, 2
CLEAR_FRAMES = TrustConfig().hysteresis_clear_frames
"""`bag infer` runs with the node's default trust settings."""


def _make(path: Path, *artefact: str) -> None:
    argv = ["bag", "make", str(path), "--synthetic", str(FRAMES), "--size", "320x240"]
    argv += ["--seed", str(SEED), *(a for spec in artefact for a in ("--artefact", spec))]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def replay(synthetic_checkpoint: Path, tmp_path_factory) -> dict[str, Path]:
    """The clean and the artefact bag, their `bag infer` outputs and `bag eval` reports."""
    root = tmp_path_factory.mktemp("trust_replay")
    paths: dict[str, Path] = {}
    for name, artefact in (("clean", ()), ("artefact", (ARTEFACT,))):
        bag, out, report = root / name, root / f"{name}_out", root / f"{name}_report"
        _make(bag, *artefact)
        infer = ["bag", "infer", str(bag), str(out), "--checkpoint", str(synthetic_checkpoint)]
        assert main(infer) == 0
        assert main(["bag", "eval", str(bag), str(out), "--report", str(report)]) == 0
        paths |= {name: bag, f"{name}_out": out, f"{name}_report": report}
    return paths


def _trust(path: Path) -> list:
    with BagReader(path) as bag:
        return [message for _, message in bag.decoded("/endoarss/trust", TRUST)]


def _metrics(report: Path) -> dict:
    return json.loads((report / "metrics.json").read_text())


def test_clean_clip_never_latches_error(replay: dict[str, Path]) -> None:
    trust = _trust(replay["clean_out"])
    assert len(trust) == FRAMES
    assert all(int(t.latched_level) != ERROR for t in trust), [t.summary for t in trust]
    metrics = _metrics(replay["clean_report"])["trust"]
    assert metrics["topic"] == "/endoarss/trust"
    assert metrics["frames_assessed"] == FRAMES and metrics["segments"] is None
    assert metrics["latched_levels"]["ERROR"] == 0
    assert metrics["clean"]["frames"] == FRAMES
    assert metrics["clean"]["latched_error_rate"] == 0
    per_frame = [int(t.level) for t in trust]
    assert metrics["levels"] == {
        name: per_frame.count(value) for value, name in enumerate(("OK", "WARN", "ERROR"))
    }
    assert metrics["clean"]["flag_rate"] == pytest.approx(
        sum(level > OK for level in per_frame) / FRAMES
    )
    assert "no artefact segments" in (replay["clean_report"] / "report.md").read_text()


def test_artefact_bag_differs_only_inside_the_segment(replay: dict[str, Path]) -> None:
    """Frames outside the segment and the ground truth are the clean clip's; frames inside are
    corrupted; the trust of the frames before the segment is the clean clip's too."""
    frames, truth = {}, {}
    for name in ("clean", "artefact"):
        with BagReader(replay[name]) as bag:
            frames[name] = [rgb for *_, rgb in decoded_frames(bag, "/camera/image_raw")]
            truth[name] = [m.class_id for _, m in bag.decoded("/ground_truth/activity", ACTIVITY)]
            truth[name] += [m.data.tobytes() for _, m in bag.decoded("/ground_truth/mask", IMAGE)]
    assert truth["clean"] == truth["artefact"]
    same = [np.array_equal(a, b) for a, b in zip(frames["clean"], frames["artefact"], strict=True)]
    assert same == [not FIRST <= index <= LAST for index in range(FRAMES)]
    clean, artefact = _trust(replay["clean_out"]), _trust(replay["artefact_out"])
    assert [(t.level, t.latched_level) for t in clean[:FIRST]] == [
        (t.level, t.latched_level) for t in artefact[:FIRST]
    ]


def test_artefact_latches_error_and_clears(replay: dict[str, Path]) -> None:
    trust = _trust(replay["artefact_out"])
    latched = [int(t.latched_level) for t in trust]
    assert all(int(t.level) == ERROR for t in trust[FIRST : LAST + 1]), [
        t.summary for t in trust[FIRST : LAST + 1]
    ]
    detected = next(i for i in range(FIRST, FRAMES) if latched[i] == ERROR)
    assert detected - FIRST <= 3, latched
    assert latched[detected : LAST + 1] == [ERROR] * (LAST + 1 - detected)
    cleared = next(i for i in range(LAST + 1, FRAMES) if latched[i] == OK)
    assert cleared - LAST <= CLEAR_FRAMES + 2, latched
    assert all(level == OK for level in latched[cleared:]), latched

    metrics = _metrics(replay["artefact_report"])["trust"]
    (segment,) = metrics["segments"]
    assert segment["corruption"] == "over_exposure" and segment["severity"] == 5
    assert (segment["first_frame"], segment["last_frame"]) == (FIRST, LAST)
    assert segment["frames"] == LAST + 1 - FIRST
    assert segment["detection_delay_frames"] == detected - FIRST <= 3
    assert segment["recovery_frames"] == cleared - LAST
    assert segment["flag_rate"] == 1.0
    assert segment["latched_error_rate"] == pytest.approx(
        (LAST + 1 - detected) / (LAST + 1 - FIRST)
    )
    # Clean frames: only the hysteresis' tail after the segment is latched ERROR.
    clean = metrics["clean"]
    assert clean["frames"] == FRAMES - (LAST + 1 - FIRST)
    assert clean["latched_error_rate"] == pytest.approx((cleared - LAST - 1) / clean["frames"])
    assert metrics["settled"]["frames"] == clean["frames"] - 10
    assert metrics["settled"]["latched_error_rate"] == 0
    assert metrics["by_level"]["ERROR"]["frames"] >= LAST + 1 - FIRST
    assert metrics["by_level"]["all"]["frames"] == FRAMES
    report = (replay["artefact_report"] / "report.md").read_text()
    assert f"| over_exposure severity 5, frames {FIRST}..{LAST} | 15 | 1.000 |" in report
    assert f"| {detected - FIRST} | {cleared - LAST} |" in report


def test_eval_scores_accuracy_by_trust_level(replay: dict[str, Path]) -> None:
    """The harm analysis: accuracy and mIoU on the frames of each level, from the pairing by
    stamp, against a recount from the bags themselves."""
    evaluation = evaluate_bags(replay["artefact"], replay["artefact_out"], EvalOptions())
    trust = _trust(replay["artefact_out"])
    frames = evaluation.frames
    assert [f.trust_level for f in frames] == [int(t.level) for t in trust]
    by_level = evaluation.metrics["trust"]["by_level"]
    for name, wanted in (("OK", {OK}), ("ERROR", {ERROR}), ("flagged", {1, 2}), ("all", {0, 1, 2})):
        chosen = [f for f in frames if f.trust_level in wanted]
        correct = [f.predicted_activity == f.true_activity for f in chosen]
        assert by_level[name]["frames"] == len(chosen)
        assert by_level[name]["activity_accuracy"] == pytest.approx(np.mean(correct))
        assert 0 <= by_level[name]["miou"] <= 1
    assert by_level["all"]["activity_accuracy"] == pytest.approx(
        evaluation.metrics["activity"]["accuracy"]
    )
    assert by_level["all"]["miou"] == pytest.approx(evaluation.metrics["segmentation"]["miou"])


def test_eval_without_trust_output_says_so(replay: dict[str, Path], tmp_path: Path, capsys) -> None:
    outputs = tmp_path / "no_trust"
    with BagReader(replay["clean_out"]) as source, BagWriter(outputs) as out:
        out.add_topic("/endoarss/activity", ACTIVITY, stream_qos(True))
        for log_time, message in source.decoded("/endoarss/activity", ACTIVITY):
            out.write("/endoarss/activity", log_time, message)
    capsys.readouterr()
    report = tmp_path / "report"
    assert main(["bag", "eval", str(replay["clean"]), str(outputs), "--report", str(report)]) == 0
    assert json.loads(capsys.readouterr().out)["trust"] == "no trust output"
    assert _metrics(report)["trust"] is None
    assert "No trust output" in (report / "report.md").read_text()
    # --trust-topic names the topic; one that is not there is an error naming it.
    assert (
        main(
            [
                "bag",
                "eval",
                str(replay["clean"]),
                str(outputs),
                "--report",
                str(report),
                "--trust-topic",
                "/endoarss/trust",
            ]
        )
        == 1
    )
    error = capsys.readouterr().err
    assert "/endoarss/trust" in error and str(outputs) in error
