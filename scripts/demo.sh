#!/usr/bin/env bash
# `make demo`: the shipped demo model (checkpoints/demo, made by `make demo-checkpoint`) scored
# on frames rendered now with a seed never used in training, then run in the perception node
# on those frames published by a camera process.
#
# Leaves under demo/ (DEMO_DIR): unseen/ (the frames), report_unseen/ (metrics, plots) and
# live/ (the node's overlays). DEMO_CHECKPOINT overrides the model, DEMO_SEED (1) and
# DEMO_UNSEEN_FRAMES (300) the frames.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

endoarss() { scripts/run.sh endoarss "$@"; }

out=${DEMO_DIR:-demo}
checkpoint=${DEMO_CHECKPOINT:-checkpoints/demo/endoarss_demo.safetensors}
seed=${DEMO_SEED:-1}
frames=${DEMO_UNSEEN_FRAMES:-300}

if [ -z "$out" ] || [ "$out" = "/" ]; then
  echo "demo: DEMO_DIR must name a folder" >&2
  exit 2
fi
if [ "$seed" = 0 ]; then
  echo "demo: DEMO_SEED 0 rendered the training frames; choose another" >&2
  exit 2
fi
rm -rf "$out/unseen" "$out/report_unseen" "$out/live"
mkdir -p "$out"

echo "[demo] rendering $frames frames (112x112) with seed $seed, never used in training"
endoarss synth "$out/unseen" --frames "$frames" --size 112x112 --seed "$seed" \
  --val-fraction 0 --test-fraction 0.999

echo "[demo] scoring $checkpoint on them"
endoarss eval "$checkpoint" --out "$out/report_unseen" --threads 2 \
  --config config/train_demo.yaml --set "data.root=$out/unseen" --quiet
sed -n '/^## Activity/,/^EndoVis-style/p' "$out/report_unseen/report.md"

echo "[demo] the perception node on the same frames, published by a camera process"
scripts/run.sh python -m endoarss_ros.ros.live_demo \
  --checkpoint "$checkpoint" --images "$out/unseen/images" --output "$out/live"
echo "[demo] report: $out/report_unseen/report.md; overlays: $out/live/"
