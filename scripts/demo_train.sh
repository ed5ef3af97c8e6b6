#!/usr/bin/env bash
# `make demo`, first half: from nothing, write a synthetic surgical-scene dataset, train the
# tiny EndoARSS model on it on this CPU, and evaluate it on the held-out test split.
#
# Leaves under demo/ (DEMO_DIR):
#   data/                     the synthetic dataset (generic layout: train/val/test splits)
#   run/best.safetensors      the selected model (best validation score), checkpoint format
#   run/                      last checkpoint + training state, history, TensorBoard events
#   report/                   held-out metrics (JSON, Markdown), plots, robustness curves
#   unseen/, report_unseen/   frames rendered with another seed (1) and the metrics on them
#   endoarss_demo.safetensors a copy of the selected model, for the perception node
#
# DEMO_FRAMES (2400) and DEMO_EPOCHS (from config/train_demo.yaml) size the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

endoarss() { scripts/run.sh endoarss "$@"; }

out=${DEMO_DIR:-demo}
frames=${DEMO_FRAMES:-2400}
unseen_frames=${DEMO_UNSEEN_FRAMES:-300}
epochs=${DEMO_EPOCHS:-}

if [ -z "$out" ] || [ "$out" = "/" ]; then
  echo "demo_train: DEMO_DIR must name a folder" >&2
  exit 2
fi
rm -rf "$out/data" "$out/run" "$out/report" "$out/unseen" "$out/report_unseen" \
  "$out/endoarss_demo.safetensors"
mkdir -p "$out"

echo "[demo] writing $frames synthetic frames (112x112) to $out/data"
endoarss synth "$out/data" --frames "$frames" --size 112x112 --seed 0 \
  --val-fraction 0.1 --test-fraction 0.15

train_args=(--set "output_dir=$out/run" --set "data.root=$out/data")
if [ -n "$epochs" ]; then
  train_args+=(--set "optim.epochs=$epochs")
fi
echo "[demo] training the tiny model on the CPU"
endoarss train config/train_demo.yaml "${train_args[@]}"

echo "[demo] evaluating on the held-out test split (with the corruption sweep)"
endoarss eval "$out/run/best.safetensors" --out "$out/report" --threads 1 \
  --robustness --corruptions smoke,bleeding,gaussian_noise,motion_blur,jpeg_compression,contrast \
  --severities 1,3,5 --quiet

echo "[demo] evaluating on $unseen_frames frames rendered with seed 1, never used in training"
endoarss synth "$out/unseen" --frames "$unseen_frames" --size 112x112 --seed 1 \
  --val-fraction 0 --test-fraction 0.999
endoarss eval "$out/run/best.safetensors" --out "$out/report_unseen" --threads 1 \
  --config config/train_demo.yaml --set "data.root=$out/unseen" --quiet

cp "$out/run/best.safetensors" "$out/endoarss_demo.safetensors"
echo "[demo] model for the node: $out/endoarss_demo.safetensors; report: $out/report/report.md"
