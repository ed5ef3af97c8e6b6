"""`endoarss bench model` and `endoarss bench node` run on the tiny preset with a minimal grid
and write JSON with the fields the performance page is built from."""

from __future__ import annotations

import json
import math

import pytest

from endoarss_ros.cli import main


def test_bench_model_writes_rows_for_every_setting(tmp_path):
    out = tmp_path / "model.json"
    code = main(
        [
            "bench", "model", "--presets", "vit_tiny_patch14", "--sizes", "56",
            "--batches", "1", "2", "--precisions", "fp32", "fp16", "--lora", "merged",
            "unmerged", "--threads", "1", "--rounds", "1", "--iterations", "1",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    assert {"machine", "load_average", "torch", "rows"} <= set(document)
    rows = document["rows"]
    # per batch: the floor, fp32 merged/unmerged, fp16 merged/unmerged
    assert len(rows) == 2 * 5
    for row in rows:
        assert row["preset"] == "vit_tiny_patch14" and row["input_size"] == 56
        assert row["threads"] == 1
        if row["precision"] == "fp16":
            assert row["status"] == "n/a on CPU" and row["samples"] == 0
            continue
        assert row["status"] == "ok" and row["samples"] == 1
        assert row["latency_p50_ms"] > 0 and row["frames_per_s"] > 0
        assert math.isfinite(row["vs_floor"])
    floors = [r for r in rows if r["setting"].startswith("bare")]
    assert [r["batch"] for r in floors] == [1, 2]
    assert all(r["vs_floor"] == pytest.approx(1.0) for r in floors)


def test_bench_node_compares_the_three_nodes(tmp_path):
    out = tmp_path / "node.json"
    code = main(
        [
            "bench", "node", "--preset", "vit_tiny_patch14", "--input-size", "56",
            "--sizes", "160x120", "--nodes", "perception", "naive_1thread", "passthrough",
            "--seconds", "1", "--warmup-seconds", "0.5", "--predictor-repeats", "2",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    assert {"machine", "model", "cpu_threads", "rows", "comparisons"} <= set(document)
    rows = {row["node"]: row for row in document["rows"]}
    assert set(rows) == {"perception", "naive_1thread", "passthrough"}
    for row in rows.values():
        assert row["size"] == "160x120" and row["layout"] == "mono"
        assert row["published"] > 0 and 0 <= row["delivered_ratio"] <= 1
    # Every node answered with the camera frame's stamp, or the probe would match nothing.
    assert rows["perception"]["answered"] > 0 and rows["passthrough"]["answered"] > 0
    assert rows["passthrough"]["predictor_p50_ms"] == 0
    (comparison,) = document["comparisons"]
    assert comparison["ours_vs_naive_p50"] is None  # the default-thread naive node did not run
    assert comparison["ours_vs_passthrough_p50"] > 0


def test_bench_trust_measures_flags_harm_calibration_and_cost(tmp_path):
    from endoarss_ros.inference import write_random_checkpoint

    checkpoint = write_random_checkpoint(
        tmp_path / "tiny.safetensors", input_size=(56, 70), feature_statistics=True
    )
    out = tmp_path / "trust"
    code = main(
        [
            "bench", "trust", "--checkpoint", str(checkpoint), "--clips", "2",
            "--clip-length", "4", "--size", "128x96", "--corrupted-frames", "3",
            "--corruptions", "over_exposure,gaussian_blur", "--timing-rounds", "2",
            "--still-frames", "5",
            "--threads", "1", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    document = json.loads((out / "trust.json").read_text())
    assert document["clean"]["frames"] == 8 and 0 <= document["clean"]["latched_error"] <= 1
    rows = {(r["group"], r["severity"]): r for r in document["corrupted"]}
    assert set(rows) == {(c, s) for c in ("over_exposure", "gaussian_blur") for s in (3, 4, 5)}
    assert rows["over_exposure", 5]["flagged"] == 1.0  # a white frame is never OK
    assert all(r["frames"] == 3 and "unflagged_clean_accuracy" in r for r in rows.values())
    assert document["out_of_view"]["frames"] == 3
    far = {r["group"]: r for r in document["far_ood"]}
    assert far["procedural textures"]["frames"] > 5 and far["natural photographs (scikit-image)"]
    assert 0.0 <= document["far_ood_auroc"] <= 1.0  # the checkpoint has feature statistics
    assert 0.0 <= document["far_ood_alarm_auroc"] <= 1.0
    for calibration in document["calibration"].values():
        assert calibration["temperature"] == 1.0 and not calibration["calibrated"]
        assert calibration["ece_before"] == pytest.approx(calibration["ece_after"])
    assert document["calibration"]["stills"]["frames"] == 5
    cost = document["cost"]
    assert cost["rounds"] == 2 and cost["predictor_ms"] > 0 and cost["image_checks_ms"] > 0
    assert "| clean |" in (out / "trust.md").read_text()


def test_bench_trust_refuses_bad_options_naming_them(capsys):
    with pytest.raises(SystemExit) as refused:
        main(["bench", "trust", "--size", "large"])
    assert refused.value.code == 2 and "--size" in capsys.readouterr().err
    assert main(["bench", "trust", "--corruptions", "fog"]) == 2
    assert "unknown ['fog']" in capsys.readouterr().err


def test_bench_memory_measures_both_variants_per_size(tmp_path):
    from endoarss_ros.inference import write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "tiny.safetensors", input_size=(56, 56))
    out = tmp_path / "memory.json"
    code = main(
        [
            "bench", "memory", "--checkpoint", str(checkpoint), "--sizes", "64x48",
            "2100x2100", "--rounds", "1", "--json", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    assert {"machine", "checkpoint", "rows"} <= set(document)
    assert [row["size"] for row in document["rows"]] == ["64x48", "2100x2100"]
    for row in document["rows"]:
        for variant in ("strips", "one_pass"):
            assert row[f"{variant}_peak_x_frame"] >= 0 and row[f"{variant}_s"] > 0
        assert row["time_ratio"] == pytest.approx(row["strips_s"] / row["one_pass_s"], abs=0.01)
