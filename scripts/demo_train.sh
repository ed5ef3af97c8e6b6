#!/usr/bin/env bash
# `make demo-train`: from nothing, write a synthetic surgical-scene dataset, train the tiny
# EndoARSS model on it on this CPU, and evaluate it on the held-out test split, on frames
# rendered with a seed never used in training and on clips of that seed at a 4:3 camera size.
#
# The dataset mixes independent frames with short clips (frames of a procedure, as bags and
# cameras give them) at a square and two 4:3 sizes, so the model serves the bag path and
# 320x240 or 640x480 cameras as well as the square stills.
#
# Leaves under demo/ (DEMO_DIR):
#   data/                     the synthetic dataset (generic layout: train/val/test splits)
#   run/best.safetensors      the selected model (best validation score), checkpoint format,
#                             calibrated: temperatures and out-of-distribution feature statistics
#   run/train.log             what `endoarss train` printed
#   run/calibrate.log         what `endoarss calibrate` printed (the fitted numbers)
#   run/                      last checkpoint + training state, history, TensorBoard events
#   report/                   held-out metrics (JSON, Markdown), plots, robustness curves
#   unseen/, report_unseen/   frames rendered with another seed (1) and the metrics on them
#   unseen_clips/, report_unseen_clips/  clips of seed 1 at 320x240 and the metrics on them
#   endoarss_demo.safetensors a copy of the selected model, for the perception node
#
# DEMO_FRAMES (4000 independent frames), DEMO_CLIPS (14 clips of 300 frames) and DEMO_EPOCHS (from config/train_demo.yaml) size the run. With
# DEMO_PUBLISH=DIR (`make demo-checkpoint`: checkpoints/demo) the model, its training config,
# training and calibration logs, history and both evaluation reports are copied there, as
# shipped for `make demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

endoarss() { scripts/run.sh endoarss "$@"; }

out=${DEMO_DIR:-demo}
frames=${DEMO_FRAMES:-4000}
clips=${DEMO_CLIPS:-14}
unseen_frames=${DEMO_UNSEEN_FRAMES:-300}
epochs=${DEMO_EPOCHS:-}
publish=${DEMO_PUBLISH:-}

if [ -z "$out" ] || [ "$out" = "/" ]; then
  echo "demo_train: DEMO_DIR must name a folder" >&2
  exit 2
fi
rm -rf "$out/data" "$out/run" "$out/report" "$out/unseen" "$out/report_unseen" \
  "$out/unseen_clips" "$out/report_unseen_clips" "$out/endoarss_demo.safetensors"
mkdir -p "$out/run"

echo "[demo-train] writing $frames synthetic frames and $clips clips of 300 frames to $out/data"
endoarss synth "$out/data" --frames "$frames" --clips "$clips" --clip-length 300 \
  --size 112x112 --size 149x112 --size 224x168 --seed 0 --val-fraction 0.05 --test-fraction 0.05

train_args=(--set "output_dir=$out/run" --set "data.root=$out/data")
if [ -n "$epochs" ]; then
  train_args+=(--set "optim.epochs=$epochs")
fi
echo "[demo-train] training the tiny model on the CPU"
endoarss train config/train_demo.yaml "${train_args[@]}" 2>&1 | tee "$out/run/train.log"

# Temperatures on the validation split, feature statistics on (2000 frames of) the training
# split; the weights are unchanged, so the evaluations below score the published file.
echo "[demo-train] calibrating: temperatures and out-of-distribution feature statistics"
endoarss calibrate "$out/run/best.safetensors" --in-place --set "data.root=$out/data" \
  --threads 1 --quiet 2>&1 | tee "$out/run/calibrate.log"

echo "[demo-train] evaluating on the held-out test split (with the corruption sweep)"
endoarss eval "$out/run/best.safetensors" --out "$out/report" --threads 1 \
  --robustness --corruptions smoke,bleeding,gaussian_noise,motion_blur,jpeg_compression,contrast \
  --severities 1,3,5 --quiet

echo "[demo-train] evaluating on $unseen_frames frames rendered with seed 1, never used in training"
endoarss synth "$out/unseen" --frames "$unseen_frames" --size 112x112 --seed 1 \
  --val-fraction 0 --test-fraction 0.999
endoarss eval "$out/run/best.safetensors" --out "$out/report_unseen" --threads 1 \
  --config config/train_demo.yaml --set "data.root=$out/unseen" --quiet

echo "[demo-train] evaluating on 4 clips of 300 frames at 320x240 rendered with seed 1"
endoarss synth "$out/unseen_clips" --frames 0 --clips 4 --clip-length 300 --size 320x240 \
  --seed 1 --val-fraction 0 --test-fraction 0.999
endoarss eval "$out/run/best.safetensors" --out "$out/report_unseen_clips" --threads 1 \
  --config config/train_demo.yaml --set "data.root=$out/unseen_clips" --quiet

cp "$out/run/best.safetensors" "$out/endoarss_demo.safetensors"
echo "[demo-train] model: $out/endoarss_demo.safetensors; report: $out/report/report.md"

if [ -n "$publish" ]; then
  mkdir -p "$publish/report" "$publish/report_unseen" "$publish/report_unseen_clips"
  cp "$out/endoarss_demo.safetensors" "$publish/endoarss_demo.safetensors"
  chmod 644 "$publish/endoarss_demo.safetensors"
  cp "$out/run/config.json" "$out/run/history.jsonl" "$out/run/summary.json" \
    "$out/run/train.log" "$out/run/calibrate.log" "$publish/"
  cp "$out/report/report.md" "$out/report/metrics.json" "$publish/report/"
  cp "$out/report_unseen/report.md" "$out/report_unseen/metrics.json" "$publish/report_unseen/"
  cp "$out/report_unseen_clips/report.md" "$out/report_unseen_clips/metrics.json" \
    "$publish/report_unseen_clips/"
  echo "[demo-train] published to $publish"
fi
