#!/usr/bin/env bash
# Targets of the original ReTree seed. Settings come from the environment:
#   DATA_ROOT  dataset folder(s) (unset: the embedded scikit-image fundus photograph)
#   PRESET (lean)  SIZE (128: what the shipped sr takes to 512 px)  STEPS (training steps, 2000)  BATCH (4)  DEVICE (cpu)
#   MASKS (retree_studio/examples)  SAMPLE_STEPS (20)  SAMPLER (dpmpp)  MINUTES (wall-time budget per training, unset: none)
#   GUIDANCE (2: the guidance scale `release` stores with the concat and SPADE models; the shipped ones recommend 2)
#   SOFT_TREE_PX (1.5: the vessel model learns soft trees, weights/README.md "Stage 1"; 0 for binary masks)
#   train_segment / train_sr / train_treesr: BATCH_CROPS (8 crops of 128 px from 512 px views), LR (1e-3)
#   gpu: OUT (outputs/gpu_session), MINUTES (2.5 per model), BATCH_GPU (64), DEVICE_GPU (cuda), COMPILE (1: torch.compile)
set -euo pipefail
cd "$(dirname "$0")"
PRESET=${PRESET:-lean}; SIZE=${SIZE:-128}; STEPS=${STEPS:-2000}; BATCH=${BATCH:-4}; DEVICE=${DEVICE:-cpu}
MASKS=${MASKS:-retree_studio/examples}; SAMPLE_STEPS=${SAMPLE_STEPS:-20}; SAMPLER=${SAMPLER:-dpmpp}
data_args=()
budget_args=()
if [ -n "${MINUTES:-}" ]; then budget_args=(--max_minutes "$MINUTES"); fi
if [ -n "${DATA_ROOT:-}" ]; then read -r -a roots <<<"$DATA_ROOT"; data_args=(--data_root "${roots[@]}"); fi

train() {  # train MODE: continues runs/MODE if it was interrupted
  local mode_args=()
  if [ "$1" = vessel ]; then mode_args=(--soft_tree_px "${SOFT_TREE_PX:-1.5}"); fi
  python -m retree_core train --mode "$1" "${data_args[@]}" --preset "$PRESET" --image_size "$SIZE" \
    --batch_size "$BATCH" --max_steps "$STEPS" --device "$DEVICE" --output_dir "runs/$1" --resume \
    "${budget_args[@]}" "${mode_args[@]}"
}
train_helper() {  # train_helper MODE PRESET: the segmenter, sr or treesr model, 512 px views, 128 px crops
  local mode_args=()
  if [ "$1" = treesr ]; then mode_args=(--soft_tree_px "${SOFT_TREE_PX:-1.5}"); fi
  python -m retree_core train --mode "$1" --preset "$2" --image_size 512 --crop_px 128 "${data_args[@]}" \
    --batch_size "${BATCH_CROPS:-8}" --max_steps "$STEPS" --lr "${LR:-1e-3}" --device "$DEVICE" \
    --output_dir "runs/$1" --resume "${budget_args[@]}" "${mode_args[@]}"
}
release() {  # vessel, concat and spade side by side (one device), then exported to weights/
  local pids=()
  for mode in vessel concat spade; do train "$mode" > "runs/$mode.out" 2>&1 & pids+=($!); done
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || { echo "a training failed: see runs/vessel.out, runs/concat.out, runs/spade.out" >&2; return 1; }
  python -m retree_core export --checkpoint runs/vessel/last.ckpt --out weights/vessel
  for mode in concat spade; do
    python -m retree_core export --checkpoint "runs/$mode/last.ckpt" --out "weights/$mode" --guidance "${GUIDANCE:-2}"
  done
}
sample() {  # sample MODE: fundus images for every mask in $MASKS
  python -m retree_core generate --mode "$1" --checkpoint "runs/$1/last.ckpt" --masks "$MASKS" \
    --sampler "$SAMPLER" --steps "$SAMPLE_STEPS" --device "$DEVICE" --output_dir "outputs/$1"
}

case "${1:-}" in
  train_vessel) train vessel ;;
  train_concat) train concat ;;
  train_spade) train spade ;;
  train_all) train vessel; train concat; train spade ;;
  train_segment) train_helper segment fine ;;
  train_sr) train_helper sr light ;;  # its perceptual term uses the shipped segmenter (weights/segment)
  train_treesr) train_helper treesr fine ;;  # its input is the vessel model's target (SOFT_TREE_PX)
  sample_concat) sample concat ;;
  sample_spade) sample spade ;;
  all) train concat; train spade; sample concat; sample spade ;;
  release) mkdir -p runs; release ;;
  gpu)  # one lent accelerator: continue sr, concat and spade from the shipped files, export and measure
    python bench/gpu_session.py "${data_args[@]}" --out "${OUT:-outputs/gpu_session}" --minutes "${MINUTES:-2.5}" \
      --batch_size "${BATCH_GPU:-64}" --device "${DEVICE_GPU:-cuda}" ${COMPILE:+--compile} ;;
  *) echo "usage: ./run.sh train_vessel|train_concat|train_spade|train_all|train_segment|train_sr|train_treesr|sample_concat|sample_spade|all|release|gpu" >&2; exit 2 ;;
esac
