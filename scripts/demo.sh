#!/usr/bin/env bash
# The main job: set up, pretrain SimCLR on Fashion-MNIST for a few CPU minutes, then compare the
# kNN top-1 of the pretrained encoder with a random-init encoder of the same architecture and
# with raw pixels. `bash scripts/demo.sh digits` runs the same on scikit-learn's digits.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-fashion-mnist}
bash scripts/setup.sh
if [ "$DATA" = fashion-mnist ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "Fashion-MNIST is not installed (see above); running the demo on digits instead."
  DATA=digits
fi
SELFSUP=.venv/bin/selfsup
K=200; [ "$DATA" = digits ] && K=20  # the InstDisc protocol; k=20 on small data sets
OUT=runs/demo-$DATA-$(date +%Y%m%d-%H%M%S)
RESULTS=$OUT/eval

# no options: the recipe chosen for this machine and data (printed; --recipe paper for the paper's settings)
$SELFSUP train simclr --data "$DATA" --out "$OUT"
$SELFSUP eval knn --checkpoint "$OUT/checkpoints/last.ckpt" --data "$DATA" --k $K --out "$RESULTS/knn-pretrained.json"
# the random-init baseline is the run's own network with fresh weights
$SELFSUP eval knn --checkpoint "$OUT/checkpoints/last.ckpt" --random-init --data "$DATA" --k $K \
  --out "$RESULTS/knn-random.json"
$SELFSUP eval knn --checkpoint pixels --data "$DATA" --k $K --out "$RESULTS/knn-pixels.json"

.venv/bin/python - "$RESULTS" <<'PY'
import json, sys
rows = [(name, json.load(open(f"{sys.argv[1]}/knn-{key}.json")))
        for key, name in (("pixels", "raw pixels"), ("random", "random init"), ("pretrained", "SimCLR"))]
print(f"\nkNN top-1 on {rows[0][1]['data']} test ({rows[0][1]['n_test']} images, k={rows[0][1]['k']}):")
for name, r in rows:
    print(f"  {name:12s} {r['top1']:.4f}   ({r['encoder']})")
print(f"  SimCLR vs random init: {100 * (rows[2][1]['top1'] - rows[1][1]['top1']):+.1f} points; "
      f"vs raw pixels: {100 * (rows[2][1]['top1'] - rows[0][1]['top1']):+.1f} points")
PY
