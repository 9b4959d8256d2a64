#!/usr/bin/env bash
# The first success table of BENCHMARKS.md (docs/method.md stages 2-3): scratch vs LAPA-pretrained vs
# ConLA-pretrained vs ActionVLA, finetuned on the same robot demos for the same number of steps,
# exported to ONNX and evaluated with `conla eval sim --model` (the robot's runtime).
#
#   scripts/success_table.sh            # all four rows, then the table
#   STEPS=3000 scripts/success_table.sh  # a longer budget (every stage reads these variables)
#   ROWS="conla lapa" scripts/success_table.sh & ROWS="scratch actionvla" scripts/success_table.sh
#                                       # two rows at a time, one core each
#   OUT=runs/table_2demos FINETUNE_DEMOS=data/episodes_robot_2pt scripts/success_table.sh
#                                       # other finetuning demos (link OUT/vla and OUT/labels to
#                                       # an earlier OUT's to reuse its pretraining)
#   OUT=runs/table_1k VIDEOS=data/videos_human_1k CONLA_LAM=runs/lam/conla_1k PRETRAIN_STEPS=3000 \
#     FINETUNE_DEMOS=data/episodes_robot_2pt ROWS=conla scripts/success_table.sh
#                                       # latent pretraining on other videos / another LAM run
#
# Each stage is skipped when its output is complete, so an interrupted run picks up where it
# stopped (a half-trained run resumes from its newest checkpoint).
# Inputs (BENCHMARKS.md gives the commands): data/videos_human, data/episodes_robot, and the
# LAM runs runs/lam/lapa_small and runs/lam/conla_small (VIDEOS, CONLA_LAM, LAPA_LAM override them).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .venv/bin/activate
# One thread: on a shared 2-core machine two spinning OpenMP threads slow down 5x whenever another
# process wants a core; one thread is steady. Raise it on a machine of its own.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

PRETRAIN_STEPS=${PRETRAIN_STEPS:-1000}   # latent (LAPA/ConLA) and action (ActionVLA) pretraining
STEPS=${STEPS:-1000}                     # finetuning, identical for every row
EVAL_EPISODES=${EVAL_EPISODES:-10}       # held-out seeds per MT10 task
OUT=${OUT:-runs/table}
FINETUNE_DEMOS=${FINETUNE_DEMOS:-data/episodes_robot}  # 10 scripted-expert episodes per MT10 task, seeds 500000+
ACTION_PRETRAIN=data/episodes_robot_pretrain   # other seeds: ActionVLA's pretraining episodes
VIDEOS=${VIDEOS:-data/videos_human}            # action-free clips the LAM labels for latent pretraining
CONLA_LAM=${CONLA_LAM:-runs/lam/conla_small}
LAPA_LAM=${LAPA_LAM:-runs/lam/lapa_small}

stage() { printf '\n=== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

train() {  # train KIND RUN_DIR ARGS...: skip when finished, resume when interrupted
    local kind=$1 run=$2; shift 2
    if grep -qs '"status": "finished"' "$run/summary.json"; then echo "$run: done"; return; fi
    local resume=(); [[ -d $run/checkpoints ]] && resume=(--resume)
    conla train "$kind" --run-dir "$run" "${resume[@]}" "$@"
}

finetune_export_eval() {  # NAME [INIT_FROM]
    local name=$1 init=${2:-null}
    stage "finetune $name"
    train policy "$OUT/policy/$name" --config config/policy_train_vit_v1.yaml --set data.root=$FINETUNE_DEMOS \
        --set init_from="$init" --set train.steps="$STEPS" --set train.checkpoint_every=250
    if [[ ! -f $OUT/models/$name/model.yaml ]]; then
        conla export --checkpoint "$OUT/policy/$name" --out "$OUT/models/$name" --text-encoder-mode reference --force
    fi
    stage "eval $name"
    [[ -f $OUT/eval/$name.json ]] || conla eval sim --model "$OUT/models/$name" --episodes "$EVAL_EPISODES" \
        --json "$OUT/eval/$name.json" --no-progress
}

latent_pretrain() {  # NAME LAM_RUN
    local name=$1 lam=$2
    stage "label $name"
    [[ -f $OUT/labels/$name.jsonl ]] || conla label --lam "$lam" --videos "$VIDEOS" --out "$OUT/labels/$name.jsonl"
    stage "pretrain $name"
    train vla "$OUT/vla/$name" --config config/vla_vit_v1.yaml --set data.labels="$OUT/labels/$name.jsonl" \
        --set train.steps="$PRETRAIN_STEPS" --set train.lr_warmup_steps=100 --set train.checkpoint_every=250
}

row_conla() { latent_pretrain conla "$CONLA_LAM"; finetune_export_eval conla "$OUT/vla/conla"; }
row_lapa() { latent_pretrain lapa "$LAPA_LAM"; finetune_export_eval lapa "$OUT/vla/lapa"; }
row_scratch() { finetune_export_eval scratch; }
row_actionvla() {
    stage "ActionVLA pretraining episodes"
    conla sim episodes --tasks mt10 --episodes 10 --seed 600000 --out $ACTION_PRETRAIN
    stage "pretrain actionvla"
    train policy "$OUT/vla/actionvla" --config config/policy_train_vit_v1.yaml --set data.root=$ACTION_PRETRAIN \
        --set train.steps="$PRETRAIN_STEPS" --set train.lr_warmup_steps=100 --set train.checkpoint_every=250
    finetune_export_eval actionvla "$OUT/vla/actionvla"
}

mkdir -p "$OUT/eval" "$OUT/labels"
# ROWS picks rows; two instances with different rows use both cores (one thread each).
for row in ${ROWS:-conla scratch lapa actionvla}; do "row_$row"; done
for row in scratch lapa conla actionvla; do [[ -f $OUT/eval/$row.json ]] || exit 0; done  # the table needs all four

stage "table"
python - "$OUT/eval" <<'EOF'
import json, sys
from pathlib import Path
rows = ["scratch", "lapa", "conla", "actionvla"]
reports = {r: json.loads((Path(sys.argv[1]) / f"{r}.json").read_text()) for r in rows}
tasks = list(reports["scratch"]["success_rate"])
print("| task | " + " | ".join(rows) + " |")
print("|---" * (len(rows) + 1) + "|")
for t in tasks:
    print(f"| {t} | " + " | ".join(f"{100 * reports[r]['success_rate'][t]:.0f} %" for r in rows) + " |")
print("| **mean** | " + " | ".join(f"**{100 * reports[r]['mean_success']:.1f} %**" for r in rows) + " |")
EOF
