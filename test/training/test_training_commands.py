"""`endoarss train`, `endoarss eval` and `endoarss ablation` end to end on tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from training_tiny_runs import TINY_RUN

from endoarss_ros.cli import main
from endoarss_ros.training.ablation import (
    BEGIN,
    END,
    RowResult,
    delta_m,
    write_table,
)


def write_config(path: Path, output_dir: Path, *extra: str) -> Path:
    from endoarss_ros.training.config import load_train_config

    config = load_train_config(None, [*TINY_RUN, f"output_dir={output_dir}", *extra])
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def test_train_then_eval_writes_checkpoint_and_report(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "train.yaml", tmp_path / "run")
    assert main(["train", str(config), "--set", "optim.epochs=1"]) == 0
    best = tmp_path / "run" / "best.safetensors"
    assert best.is_file()
    assert "training images/s" in capsys.readouterr().out

    report = tmp_path / "report"
    code = main(
        [
            "eval",
            str(best),
            "--out",
            str(report),
            "--robustness",
            "--corruptions",
            "gaussian_noise,smoke",
            "--severities",
            "1,5",
            "--examples",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "activity chance (uniform)" in printed and "segmentation_miou" in printed
    names = {p.name for p in report.iterdir()}
    assert names == {
        "metrics.json",
        "report.md",
        "confusion_matrix.png",
        "per_class_iou.png",
        "best_frames.png",
        "worst_frames.png",
        "robustness.png",
        "reliability.png",
    }
    document = json.loads((report / "metrics.json").read_text())
    assert document["context"]["split"] == "test" and document["context"]["frames"] == 8
    seg = document["metrics"]["segmentation"]
    assert len(seg["per_class_iou"]) == 8 and "challenge_iou" in seg
    assert sum(sum(row) for row in document["metrics"]["activity"]["confusion"]) == 8
    assert set(document["robustness"]) == {"clean", "gaussian_noise", "smoke"}
    assert set(document["robustness"]["smoke"]) == {"1", "5"}
    markdown = (report / "report.md").read_text()
    assert "without background" in markdown and "| smoke |" in markdown
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_reports_a_bad_config_by_field(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "train.yaml", tmp_path / "run")
    assert main(["train", str(config), "--set", "optim.batch_size=0"]) == 2
    assert "optim.batch_size must be a positive integer" in capsys.readouterr().err


def test_eval_rejects_a_file_that_is_not_a_checkpoint(tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["eval", str(bogus), "--out", str(tmp_path / "r")]) == 1
    assert "model.safetensors" in capsys.readouterr().err


def test_ablation_command_writes_the_table(tmp_path: Path) -> None:
    base = write_config(tmp_path / "base.yaml", tmp_path / "unused", "optim.epochs=1")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "base": "base.yaml",
                "baselines": {"segmentation": "seg only"},
                "rows": [
                    {"name": "seg only", "set": {"loss.tasks": ["segmentation"]}},
                    {"name": "both", "set": {"model.overrides": {"sma": {"enabled": False}}}},
                ],
            }
        )
    )
    assert base.is_file()
    table = tmp_path / "docs" / "ablation.md"
    table.parent.mkdir()
    table.write_text(f"# Ablation\n\nintro\n\n{BEGIN}\nold\n{END}\n\nnotes\n")
    command = ["ablation", str(spec), "--out", str(tmp_path / "runs"), "--table", str(table)]
    assert main([*command, "--jobs", "2"]) == 0
    text = table.read_text()
    assert text.startswith("# Ablation\n\nintro\n") and text.rstrip().endswith("notes")
    assert "old" not in text and "| seg only | seg |" in text and "| both | act+seg |" in text
    rows = json.loads((tmp_path / "runs" / "ablation.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["seg only", "both"]
    assert "activity_accuracy" not in rows[0]["test_metrics"][0]
    assert "activity_accuracy" in rows[1]["test_metrics"][0]


def test_delta_m_is_the_mean_relative_change() -> None:
    act = RowResult("a", ("activity",), False, False, 1, [{"activity_accuracy": 0.5}])
    seg = RowResult("s", ("segmentation",), False, False, 1, [{"segmentation_miou": 0.4}])
    both = RowResult(
        "b",
        ("activity", "segmentation"),
        True,
        True,
        1,
        [{"activity_accuracy": 0.6, "segmentation_miou": 0.3}],
    )
    assert delta_m(both, {"activity": act, "segmentation": seg}) == pytest.approx(
        100 * ((0.6 - 0.5) / 0.5 + (0.3 - 0.4) / 0.4) / 2
    )


def test_write_table_creates_or_appends(tmp_path: Path) -> None:
    fresh = tmp_path / "new.md"
    write_table(fresh, "table\n")
    assert fresh.read_text() == f"{BEGIN}\ntable\n{END}\n"
    existing = tmp_path / "old.md"
    existing.write_text("# Title\n")
    write_table(existing, "table\n")
    assert existing.read_text() == f"# Title\n\n{BEGIN}\ntable\n{END}\n"
