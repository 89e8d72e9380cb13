#!/usr/bin/env bash
# Fashion-MNIST time to accuracy on one CUDA GPU, in one call (under 5 minutes).
#
#   bash benchmarks/gpu.sh [DATA_DIR]
#
# Needs only Python with torch and torchvision: torchlab runs from src/ without being installed
# (no TensorBoard logs or progress bars when those packages are absent). DATA_DIR holds
# fashion-mnist/FashionMNIST/raw/*.gz (default: $TORCHLAB_DATA, ../shared/data or .data).
# 1. correctness: a 2-epoch fast run must reach 92% test accuracy;
# 2. the time-to-accuracy table for the fast recipe and notes-cnn, with the hardware settings measured.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${TORCHLAB_DATA:-}}"
for d in "$data" ../shared/data .data; do
    if [ -n "$d" ] && ls "$d"/fashion-mnist/FashionMNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1; then data="$d"; break; fi
done
[ -n "$data" ] || { echo "gpu.sh: no Fashion-MNIST found; pass DATA_DIR (see the comment at the top)" >&2; exit 2; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python - <<'PY'
import sys, torch, torchvision
if not torch.cuda.is_available():
    sys.exit("gpu.sh: no CUDA device visible to torch")
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.cuda.get_device_name()}")
PY
echo "== correctness: fast recipe, 2 epochs"
python -m torchlab train fashion-mnist --recipe fast --target 93 --epochs 2 --device cuda --data-dir "$data" --val-size 0 \
    --run-dir "$(mktemp -d)/check" --json --quiet > /tmp/torchlab-gpu-check.json
python - <<'PY'
import json, sys
s = json.load(open("/tmp/torchlab-gpu-check.json"))
print(f"test accuracy after 2 epochs: {s['test_acc']:.2%} ({s['train_seconds']:.1f} s training)")
sys.exit(0 if s["test_acc"] >= 0.92 else "gpu.sh: the fast path on CUDA is below 92% after 2 epochs")
PY
echo "== time to accuracy"
cd benchmarks
timeout 240 python time_to_accuracy.py --device cuda --data-dir "$data" --contenders notes-cnn fast \
    --epochs 3 --skip scaling --json-out /tmp/torchlab-gpu-tta.json
