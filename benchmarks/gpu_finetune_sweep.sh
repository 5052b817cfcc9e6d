#!/usr/bin/env bash
# Several 4-fold fine-tuning runs at once on one GPU (device machine: torch with CUDA, no venv).
# Each run is its own process; a run's log, cv_*.json, summary*.json and final .onnx land in $OUT.
#   usage: OUT=/some/dir bash benchmarks/gpu_finetune_sweep.sh [deadline-seconds]
# Runs (docs/benchmarks.md, "Scorer quality"):
#   r288s0  MobileNetV2, 288 px input, seed 0, 20 epochs, + final model on all images
#   r288s1  MobileNetV2, 288 px input, seed 1, 30 epochs, + final model (the ensemble partner)
#   r320s0  MobileNetV2, 320 px input, seed 0, 20 epochs, CV only
#   cpu224  the CPU recipe (224 px, lowest layer group frozen), seed 0, 20 epochs, CV only
set -u
DEADLINE=${1:-520}
export PYTHONPATH=src:.gpu DOOHABLE_WEIGHTS_DIR=.gpu/weights PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch; print('torch', torch.__version__)"
run() {  # tag, then bench_train_finetune options
  local tag=$1; shift
  timeout "$DEADLINE" python benchmarks/bench_train_finetune.py --data .gpu/scut --backbones mobilenet_v2 \
    --out "$OUT" --tag "_$tag" "$@" > "$OUT/log_$tag.txt" 2>&1 &
}
run r288s0 --input-size 288 --seed 0 --epochs 20 --budget 300
run r288s1 --input-size 288 --seed 1 --epochs 30 --budget 330
run r320s0 --input-size 320 --seed 0 --epochs 20 --no-final
run cpu224 --input-size 224 --seed 0 --epochs 20 --freeze-groups 1 --no-final
for i in $(seq 1 $((DEADLINE / 30))); do
  sleep 30
  echo "--- $((i * 30)) s"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  grep -h "fold \|CV:\|exported\|Error\|error" "$OUT"/log_*.txt | tail -n 12
  [ "$(jobs -r | wc -l)" -eq 0 ] && break
done
wait
tail -n 4 "$OUT"/log_*.txt
