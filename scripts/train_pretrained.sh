#!/usr/bin/env bash
# How the shipped models in srcnn_theano/pretrained/ were trained (9-1-5, T91 only).
#   bash scripts/train_pretrained.sh [DATA_DIR] [WORK_DIR]
# About 3 hours of a 2-core machine in all (phase 5, the long one, runs two trainings side by
# side). Phases 2 to 5 pick their best epoch on scikit-image's bundled photographs, not on
# Set5/Set14. Phase 1 validated on Set5 (as the paper's Caffe runs did); it picked epoch 23 of 25,
# 0.003 dB above the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
WORK=${2:-runs/pretrained}
PY=${PY:-.venv/bin/python}
mkdir -p "$WORK"

# Validation images: the 7 bundled scikit-image photographs (none is in T91, Set5 or Set14).
$PY - "$WORK/skimage" <<'PYEOF'
import os, shutil, sys, tempfile
from srcnn_theano.evaluation.datasets import write_skimage_photos
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
for d in write_skimage_photos(tempfile.mkdtemp()):
    for n in os.listdir(d):
        shutil.copy(os.path.join(d, n), os.path.join(out, n))
PYEOF

# Patches: T91 x3 as the paper cuts them, and augmented (8 flips/rotations x 5 downscales,
# stride 33) for every scale.
$PY data_prep/generate_h5.py --images "$DATA/T91" --scale 3 --output "$WORK/t91_x3.h5" --force --quiet
for s in 2 3 4; do
  $PY data_prep/generate_h5.py --images "$DATA/T91" --scale $s --output "$WORK/t91_x${s}_aug33.h5" \
      --augment --stride 33 --seed $s --force --quiet
done

# Phase 1: x3 from He init, Adam 1e-3 cosine, 25 epochs of the paper's patches.
$PY train.py --train "$WORK/t91_x3.h5" --val "$DATA/Set5" --preset fast --epochs 25 \
    --out "$WORK/x3_phase1" --force --quiet
# Phase 2: every scale fine-tuned from the phase-1 x3 model on augmented patches.
for s in 2 3 4; do
  $PY train.py --train "$WORK/t91_x${s}_aug33.h5" --val "$WORK/skimage" --preset fast --lr 5e-4 \
      --batch-size 64 --epochs 5 --init-weights "$WORK/x3_phase1/best.npz" --out "$WORK/x${s}_phase2" --force --quiet
done
# Phase 3: a second, lower-rate pass.
for s in 2 3 4; do
  $PY train.py --train "$WORK/t91_x${s}_aug33.h5" --val "$WORK/skimage" --preset fast --lr 2e-4 \
      --batch-size 64 --epochs 6 --seed 1 --init-weights "$WORK/x${s}_phase2/best.npz" \
      --out "$WORK/x${s}_phase3" --force --quiet
done
# Phase 4: a third pass at a lower rate.
for s in 2 3 4; do
  $PY train.py --train "$WORK/t91_x${s}_aug33.h5" --val "$WORK/skimage" --preset fast --lr 1e-4 \
      --batch-size 64 --epochs 6 --seed 2 --init-weights "$WORK/x${s}_phase3/best.npz" \
      --out "$WORK/x${s}_phase4" --force --quiet
done
# Phase 5: one long pass, the one that closes the gap to the authors' models (the shorter passes
# above left every scale under-trained). One OpenBLAS thread per training, two trainings at once:
# x2 (the longest) beside x3 then x4.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
phase5() {  # scale lr epochs
  $PY train.py --train "$WORK/t91_x$1_aug33.h5" --val "$WORK/skimage" --preset fast --lr "$2" \
      --batch-size 64 --epochs "$3" --seed 4 --init-weights "$WORK/x$1_phase4/best.npz" \
      --out "$WORK/x$1_phase5" --force --quiet
}
phase5 2 3e-4 75 &
x2_pid=$!
phase5 3 2e-4 40
phase5 4 2e-4 30
wait "$x2_pid"
echo "best models: $WORK/x{2,3,4}_phase5/best.npz"
