#!/usr/bin/env bash
# Several 4-fold fine-tuning runs at once on one GPU (device machine: torch with CUDA, no venv).
# Each run is its own process; its log, cv_*.json and summary*.json are packed into
# $OUT/cv_logs.tar.gz, and its final model, with float16 weights, lands in $OUT/<run>.onnx.
#   usage: OUT=/some/dir bash benchmarks/recipes/gpu_finetune_sweep.sh [set] [deadline-seconds]
# Sets (docs/benchmarks.md, "Scorer quality"):
#   ensemble6 (the selfie members), all 224 px, each with its final model on all images: MobileNetV2
#     seeds 0-3 (20, 30, 30, 30 epochs) and EfficientNet-Lite0 seeds 0-1 (20, 30 epochs). Six at
#     once keep the H200 at 100%: each CV takes 390-480 s (one alone: ~140 s), so with the default
#     deadline no final model is made; run `finals` after, or give it ~700 s over two calls
#   finals: only the final models of CV runs already made (bench_train_finetune --final-from),
#     e.g. the five ensemble6 runs whose out-of-fold predictions are in benchmarks/results/gpu-ensemble5
#     (all but e1); about 150 s for the five at once, after ~40 s of decoding: give it 240 s
#   inputsize: r288s0 / r288s1 (288 px, seeds 0/1, 20/30 epochs, + final), r320s0 (320 px),
#     cpu224 (the CPU recipe, lowest layer group frozen), CV only for the last two
set -u
SET=${1:-ensemble6}
DEADLINE=${2:-500}
export PYTHONPATH=src:.gpu DOOHABLE_WEIGHTS_DIR=.gpu/weights PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
run() {  # tag, backbone, then bench_train_finetune options
  local tag=$1 bb=$2; shift 2
  timeout "$DEADLINE" python benchmarks/recipes/bench_train_finetune.py --data .gpu/scut --backbones "$bb" \
    --out "$OUT/runs" --tag "_$tag" "$@" > "$OUT/runs/log_$tag.txt" 2>&1 &
}
mkdir -p "$OUT/runs"
case $SET in
  ensemble6)
    run m0 mobilenet_v2 --seed 0 --epochs 20 --budget 280
    run m1 mobilenet_v2 --seed 1 --epochs 30 --budget 280
    run m2 mobilenet_v2 --seed 2 --epochs 30 --budget 280
    run m3 mobilenet_v2 --seed 3 --epochs 30 --budget 280
    run e0 efficientnet_lite0 --seed 0 --epochs 20 --budget 280
    run e1 efficientnet_lite0 --seed 1 --epochs 30 --budget 280 ;;
  inputsize)
    run r288s0 mobilenet_v2 --input-size 288 --seed 0 --epochs 20 --budget 300
    run r288s1 mobilenet_v2 --input-size 288 --seed 1 --epochs 30 --budget 280
    run r320s0 mobilenet_v2 --input-size 320 --seed 0 --epochs 20 --no-final
    run cpu224 mobilenet_v2 --input-size 224 --seed 0 --epochs 20 --freeze-groups 1 --no-final ;;
  finals)  # the final models of earlier CV runs, with their settings and epochs:
    # $CVDIR/cv_<backbone>_<tag>.json (default: the ensemble6 runs of the shipped selfie)
    for cv in "${CVDIR:-benchmarks/results/gpu-ensemble5}"/cv_*.json; do
      name=$(basename "$cv" .json); tag=${name##*_}; bb=${name#cv_}; bb=${bb%_*}
      run "$tag" "$bb" --final-from "$cv"
    done ;;
  *) echo "unknown set $SET (ensemble6, inputsize, finals)"; exit 2 ;;
esac
for i in $(seq 1 $((DEADLINE / 5))); do
  sleep 5
  [ "$(jobs -r | wc -l)" -eq 0 ] && break
  [ $((i % 6)) -ne 0 ] && continue
  echo "--- $((i * 5)) s"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  grep -h "fold \|CV:\|final model\|exported\|Error\|error" "$OUT"/runs/log_*.txt | tail -n 14
done
wait
tail -n 3 "$OUT"/runs/log_*.txt
# final models: weights stored as float16 (halves what comes back and what is shipped)
python - "$OUT" <<'PY'
import sys
from pathlib import Path

import numpy as np
import onnx

from doohable.model.export import fp16_weights
from doohable.model.runtime import load_scorer

out = Path(sys.argv[1])
from PIL import Image

images = sorted(Path(".gpu/scut/images").iterdir())[::70]
for src in sorted((out / "runs").glob("*.onnx")):
    dst = out / src.name.rsplit("_", 1)[1]  # mobilenet_v2_m0.onnx -> m0.onnx
    onnx.save(fp16_weights(onnx.load(str(src))), str(dst))
    a, b = load_scorer(src), load_scorer(dst)
    batch = np.stack([a.prepare(Image.open(p).convert("RGB")) for p in images])
    print(f"{dst.name}: {dst.stat().st_size / 1e6:.1f} MB, fp16 vs fp32 max |diff| "
          f"{np.max(np.abs(a.score(batch) - b.score(batch))):.2e}")
    src.unlink()
PY
tar -czf "$OUT/cv_logs.tar.gz" -C "$OUT/runs" . && rm -rf "$OUT/runs"
ls -la "$OUT"
