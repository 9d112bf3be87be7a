#!/usr/bin/env bash
# The paper's MLLMU-Bench recipe (LLaVA-1.5-7B, forget 5%): unlearn with VKD, export a complete
# checkpoint, then score it and the vanilla model with MLLMU-Bench's own protocol over three seeds.
#
#   VANILLA=/models/llava-mllmu-vanilla BENCH=/data/MLLMU-Bench TRAIN=/data/baseline_train_split \
#   OUT=runs/mllmu-vkd bash vkd_fast/configs/mllmu_llava15_vkd.sh
#
# VANILLA: the benchmark's vanilla model (LLaVA-1.5-7B fine-tuned on MLLMU-Bench's ft_Data), a local
# folder in the hub's layout. BENCH: the evaluation copy (forget_5/, retain_95/, Test_Set/, Full_Set/,
# Retain_Set/). TRAIN: the baseline training split (forget_5/, retain_95/ rows with metadata).
# Optional: SEEDS (default "0 1 2"), DEVICE (default auto), VKD_FAST (the command, default vkd-fast),
# UNLEARN_ARGS / EVAL_ARGS (extra arguments; the tests use them for sizes only: steps=, --limit).
set -euo pipefail
: "${VANILLA:?set VANILLA to the vanilla model folder}" "${BENCH:?set BENCH to the MLLMU-Bench folder}"
: "${TRAIN:?set TRAIN to the baseline training split}" "${OUT:?set OUT to a new output folder}"
SEEDS=${SEEDS:-0 1 2}
DEVICE=${DEVICE:-auto}
VKD_FAST=${VKD_FAST:-vkd-fast}
HERE=$(cd "$(dirname "$0")" && pwd)

# 1. unlearn: only the vision tower + projector are loaded and trained; the delta is a few hundred MB
$VKD_FAST unlearn "$VANILLA" --forget "mllmu:$TRAIN/forget_5" --retain "mllmu:$TRAIN/retain_95" \
    --config "$HERE/mllmu_llava15_vkd.yaml" --device "$DEVICE" --output-dir "$OUT/run" --save delta ${UNLEARN_ARGS:-}
# 2. export: the vanilla folder with the unlearned tensors (only the shards that hold them are rewritten)
$VKD_FAST export "$VANILLA" "$OUT/run" "$OUT/model"
# 3. MLLMU-Bench's own protocol, unlearned and vanilla, per seed (demonstrations and test poses move)
for s in $SEEDS; do
  $VKD_FAST eval "$OUT/model" --data mllmu --root "$BENCH" --protocol mllmu --seed "$s" --device "$DEVICE" \
      --output "$OUT/eval/vkd-seed$s.json" ${EVAL_ARGS:-}
  $VKD_FAST eval "$VANILLA" --data mllmu --root "$BENCH" --protocol mllmu --seed "$s" --device "$DEVICE" \
      --output "$OUT/eval/vanilla-seed$s.json" ${EVAL_ARGS:-}
done
echo "wrote $OUT/eval/{vkd,vanilla}-seed*.json"
