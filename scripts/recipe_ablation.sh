#!/usr/bin/env bash
# The finetuning recipe, chosen by measurement (BENCHMARKS.md "Policies that succeed"): one row per
# variant of config/policy_train.yaml, each trained, exported to ONNX and evaluated with
# `conla eval sim --model` (the robot's runtime and chunk executor) on the same held-out seeds.
#
#   scripts/recipe_ablation.sh ROW [ROW ...]     # train/export/evaluate these rows
#   scripts/recipe_ablation.sh --table           # print the table of every finished row
#   ROW_SEED=1 scripts/recipe_ablation.sh best   # another training seed of a row
#
# Rows (each is the default recipe with --set overrides; see `row_args` below): best (the recipe as
# it is, 96 px), px64 (the same at 64 px), then one row per ingredient removed from the 64-px recipe,
# which costs half as much to train (px64_no_shift, px64_no_proprio, px64_no_ema,
# px64_no_instruction_dropout), variants (px64_instruction_noise, chunk16), demos2 (2 demos per
# task), and candidates on top of the recipe: px128 (128-px camera, ~1.8x the cost), px112 (the
# 128-px recordings resized to 112, ~1.4x; evaluated on 128-px frames, resized as in training), steps8000
# (twice the training), batch32 (twice the updates at the same cost: batch 32 for 8000 steps) and bins (256 quantile bins per dimension, argmax decoding: a head that can
# keep several modes). Every stage is skipped when its output is complete; a half-trained run
# resumes from its newest checkpoint. Run two rows side by side on a 2-core machine (one thread each).
#   Inputs: 10 expert demos per MT10 task, seeds 500000+, at 96, 64 and (px128) 128 px:
#     conla sim episodes --tasks mt10 --episodes 10 --seed 500000 --image-size 96 --out data/episodes_robot_96
#     conla sim episodes --tasks mt10 --episodes 10 --seed 500000 --out data/episodes_robot
#     conla sim episodes --tasks mt10 --episodes 10 --seed 500000 --image-size 128 --out data/episodes_robot_128
#   demos2 uses the first 2 of each task (links made here in data/episodes_robot_96_2pt).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .venv/bin/activate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one steady thread per run on a shared machine

CONFIG=${CONFIG:-config/policy_train.yaml}
OUT=${OUT:-runs/recipe}
EVAL_EPISODES=${EVAL_EPISODES:-10}
ROW_SEED=${ROW_SEED:-0}
DEMOS=${DEMOS:-data/episodes_robot_96}  # 10 expert demos per MT10 task at 96 px
DEMOS_64=${DEMOS_64:-data/episodes_robot}  # the same seeds at 64 px
DEMOS_128=${DEMOS_128:-data/episodes_robot_128}  # and at 128 px
# The 64-px base of the ablation rows re-plans every 4 ticks (half the chunk), as it was measured.
PX64="--set data.root=$DEMOS_64 --set model.preprocessing.size=64 --set augment.random_shift=4 --set execution.replan_every=4"

row_args() {  # ROW -> extra `conla train policy` arguments on top of $CONFIG
    case $1 in
        best) ;;
        px64) echo "$PX64" ;;
        px64_no_shift) echo "$PX64 --set augment.random_shift=0" ;;
        px64_no_proprio) echo "$PX64 --set use_proprio=false" ;;
        px64_no_ema) echo "$PX64 --set train.ema_decay=0.0" ;;
        px64_no_instruction_dropout) echo "$PX64 --set augment.instruction_dropout=0.0" ;;
        px64_instruction_noise) echo "$PX64 --set augment.instruction_noise=0.05" ;;
        chunk16) echo "--set model.chunk_length=16" ;;
        demos2) echo "--set data.root=${DEMOS}_2pt" ;;
        bins) echo "--set model.head=bins --set model.bins_decode=argmax" ;;
        px128) echo "--set data.root=$DEMOS_128 --set model.preprocessing.size=128 --set augment.random_shift=8" ;;
        steps8000) echo "--set train.steps=8000" ;;
        batch32) echo "--set train.batch_size=32 --set train.steps=8000" ;;
        px112) echo "--set data.root=$DEMOS_128 --set model.preprocessing.size=112 --set augment.random_shift=7" ;;
        *) echo "unknown row '$1' (see row_args in $0)" >&2; return 2 ;;
    esac
}

two_demos() {  # the first 2 demos of each task, as a folder of links to the 10-demo set
    local dst=${DEMOS}_2pt
    [[ -d $dst ]] && return
    mkdir -p $dst.partial
    for ep in "$DEMOS"/*_500000 "$DEMOS"/*_500001; do ln -s "../../$ep" "$dst.partial/$(basename "$ep")"; done
    mv $dst.partial $dst
}

run_row() {  # ROW
    local row=$1 name=$1
    [[ $ROW_SEED != 0 ]] && name="${row}_seed$ROW_SEED"
    local run=$OUT/$name/train model=$OUT/$name/model evalf=$OUT/$name/eval.json
    local args; args=$(row_args "$row")
    [[ $row == demos2 ]] && two_demos
    printf '\n=== %s: train (%s)\n' "$name" "$(date +%H:%M:%S)"
    if ! grep -qs '"status": "finished"' "$run/summary.json"; then
        local resume=(); [[ -d $run/checkpoints ]] && resume=(--resume)
        # shellcheck disable=SC2086
        conla train policy --config "$CONFIG" --run-dir "$run" "${resume[@]}" --set train.seed="$ROW_SEED" \
            --set train.progress=false $args
    fi
    printf '=== %s: export (%s)\n' "$name" "$(date +%H:%M:%S)"
    [[ -f $model/model.yaml ]] || conla export --checkpoint "$run" --out "$model" --text-encoder-mode reference --force
    printf '=== %s: eval (%s)\n' "$name" "$(date +%H:%M:%S)"
    local camera=(); [[ $row == px112 ]] && camera=(--image-size 128)  # the frames it was trained on, resized by the model
    [[ -f $evalf ]] || conla eval sim --model "$model" --episodes "$EVAL_EPISODES" --json "$evalf" --no-progress "${camera[@]}"
}

if [[ ${1:-} == --table ]]; then
    exec python -m conla_ros.eval.compare "$OUT"/*/eval.json
fi
[[ $# -gt 0 ]] || { sed -n 2,23p "$0"; exit 2; }
for row in "$@"; do run_row "$row"; done
