#!/usr/bin/env bash
# Issue 13, point 1: why the latent codes do not carry the action, and which switch fixes it.
#
#   bash scripts/lam_diagnosis.sh [STAGE ...]      (default: every stage, in order)
#
# Stages: data (= data-episodes data-human data-demos data-robotvid), diag-data, random-init (the
# diagnosis of an untrained LAM, a control), <run name> (see RUNS below: train, eval, diagnose),
# eval, diag-models. Every stage skips what
# is finished and resumes what was interrupted: generated data resumes per clip/episode, a
# training run with checkpoints continues with --resume, evaluations whose JSON exists are not
# redone. Results: runs/lam13/<name>/ (training), runs/lam13/results/*.json (measurements).
# Cost on one idle CPU core (OMP_NUM_THREADS=1): see BENCHMARKS.md, "Latent action model: why the
# codes did not carry the action".
#
# Environment: STEPS (training steps of every run, default 2000), CLIPS (human-like clips per
# task, default 30), PY (python, default .venv/bin/python), NICE (default "nice -n 5").
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
CONLA=${CONLA:-.venv/bin/conla}
NICE=${NICE:-nice -n 5}
STEPS=${STEPS:-2000}
CLIPS=${CLIPS:-30}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

HUMAN=data/videos_human_${CLIPS}pt
ROBOTVID=data/videos_robot_10pt
EPISODES=data/episodes_robot
DEMOS=data/episodes_demos_2pt  # the few labelled demos of the action-head extension (other seeds)
RUNS_DIR=runs/lam13
RESULTS=runs/lam13/results
mkdir -p "$RUNS_DIR" "$RESULTS" logs/lam13

# name | data root | extra --set overrides (space-separated key=value)
LAPA_SETS="model.contrast.action_contrast=false model.contrast.visual_contrast=false model.contrast.time_reversal=false"
SUP_SETS="model.action_head_dim=4 supervision.episodes=$DEMOS"
RUNS=(
  "conla_k8|$HUMAN|"                                     # today's ConLA, config/lam_cpu_small.yaml as it is
  "conla_k8_res|$HUMAN|model.decoder_residual=true"      # the decoder predicts the change
  "conla_k24_res|$HUMAN|data.frame_gap=24 model.decoder_residual=true"
  "conla_k24_res_sup|$HUMAN|data.frame_gap=24 model.decoder_residual=true $SUP_SETS"  # extension
  "conla_k24_res_noise03|$HUMAN|data.frame_gap=24 model.decoder_residual=true model.quantizer.noise_scale=0.3"  # extension
  "conla_k24_res_sup_noise03|$HUMAN|data.frame_gap=24 model.decoder_residual=true model.quantizer.noise_scale=0.3 $SUP_SETS"  # extensions
  "lapa_k24_res|$HUMAN|data.frame_gap=24 model.decoder_residual=true $LAPA_SETS"
  "conla_k24|$HUMAN|data.frame_gap=24"
  "conla_robotvid_k24_res|$ROBOTVID|data.frame_gap=24 model.decoder_residual=true"
)

stage_data_episodes() {
  $NICE "$CONLA" sim episodes --tasks mt10 --episodes 10 --seed 500000 --out "$EPISODES" --workers 1 --no-progress
}
stage_data_human() {
  $NICE "$CONLA" sim videos --tasks mt10 --clips "$CLIPS" --out "$HUMAN" --domain human --workers 1 --no-progress
}
stage_data_demos() {
  $NICE "$CONLA" sim episodes --tasks mt10 --episodes 2 --seed 600000 --out "$DEMOS" --workers 1 --no-progress
}
stage_data_robotvid() {
  $NICE "$CONLA" sim videos --tasks mt10 --clips 10 --out "$ROBOTVID" --domain robot --workers 1 --no-progress
}

stage_diag_data() {
  local out=$RESULTS/diagnosis_data.json
  [ -f "$out" ] && { echo "diag-data: $out exists"; return; }
  $NICE "$PY" -m conla_training.analysis.lam_diagnosis --episodes "$EPISODES" --cache data/lam13_replays.npz \
    --gaps 4 8 16 24 32 --out "$out"
}

train_run() {  # name root overrides...
  local name=$1 root=$2; shift 2
  local dir=$RUNS_DIR/$name
  if [ -f "$dir/summary.json" ] && grep -q '"status": "finished"' "$dir/summary.json"; then
    echo "$name: finished"; return
  fi
  local sets=(--set "data.root=$root" --set "train.steps=$STEPS")
  for kv in "$@"; do sets+=(--set "$kv"); done
  local resume=()
  [ -d "$dir/checkpoints" ] && [ -n "$(ls -A "$dir/checkpoints" 2>/dev/null)" ] && resume=(--resume)
  $NICE "$CONLA" train lam --config config/lam_cpu_small.yaml "${sets[@]}" --run-dir "$dir" "${resume[@]}"
}

eval_run() {
  local name=$1 out=$RESULTS/eval_$1.json
  [ -f "$out" ] && { echo "eval $name: $out exists"; return; }
  $NICE "$CONLA" eval lam --lam "$RUNS_DIR/$name" --videos "$HUMAN" --episodes "$EPISODES" \
    --cross-domain replay --held-out 0.3 --out "$out"
}

diag_run() {
  local name=$1 out=$RESULTS/diagnosis_$1.json
  [ -f "$out" ] && { echo "diag $name: $out exists"; return; }
  $NICE "$PY" -m conla_training.analysis.lam_diagnosis --episodes "$EPISODES" --cache data/lam13_replays.npz \
    --no-data --lam "$RUNS_DIR/$name" --out "$out"
}

stage_random_init() {  # control: the diagnosis of an untrained LAM of the same config (seed 0)
  local dir=$RUNS_DIR/random_init
  if [ ! -f "$dir/checkpoint.pt" ]; then
    mkdir -p "$dir"
    $PY - "$dir/checkpoint.pt" <<'PYEOF'
import sys
import torch
from conla_ros.core.config import config_to_dict, load_config
from conla_training.engine.checkpoint import FORMAT
from conla_training.trainers.lam import LAMRunConfig
from conla_training.models.lam import LatentActionModel
config = load_config(LAMRunConfig, "config/lam_cpu_small.yaml")
torch.manual_seed(0)
model = LatentActionModel(config.model)
torch.save({"format": FORMAT, "model": model.state_dict(), "model_config": config_to_dict(config.model),
            "run_config": config_to_dict(config), "step": 0}, sys.argv[1])
PYEOF
  fi
  local out=$RESULTS/diagnosis_random_init.json
  [ -f "$out" ] || $NICE "$PY" -m conla_training.analysis.lam_diagnosis --episodes "$EPISODES" \
    --cache data/lam13_replays.npz --no-data --lam "$dir/checkpoint.pt" --out "$out"
}

run_names() { for r in "${RUNS[@]}"; do echo "${r%%|*}"; done; }

do_stage() {
  case $1 in
    data) stage_data_episodes; stage_data_human; stage_data_demos; stage_data_robotvid ;;
    data-episodes) stage_data_episodes ;;
    data-human) stage_data_human ;;
    data-demos) stage_data_demos ;;
    data-robotvid) stage_data_robotvid ;;
    diag-data) stage_diag_data ;;
    random-init) stage_random_init ;;
    eval) for n in $(run_names); do [ -d "$RUNS_DIR/$n" ] && eval_run "$n"; done ;;
    diag-models) for n in $(run_names); do [ -d "$RUNS_DIR/$n" ] && diag_run "$n"; done ;;
    *)
      for r in "${RUNS[@]}"; do
        IFS='|' read -r name root overrides <<<"$r"
        if [ "$name" = "$1" ]; then
          # shellcheck disable=SC2086
          train_run "$name" "$root" $overrides
          eval_run "$name"
          diag_run "$name"
          return
        fi
      done
      echo "unknown stage $1; stages: data data-episodes data-human data-demos data-robotvid diag-data random-init $(run_names | tr '\n' ' ')eval diag-models" >&2
      exit 2 ;;
  esac
}

if [ $# -eq 0 ]; then
  set -- data diag-data random-init $(run_names)
fi
for stage in "$@"; do do_stage "$stage"; done
