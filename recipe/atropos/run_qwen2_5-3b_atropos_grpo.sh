#!/usr/bin/env bash
# GRPO on Atropos environments with Qwen2.5-3B-Instruct (LoRA), verl's usual knobs as environment
# variables with defaults; any further Hydra override goes after them, e.g.
#   recipe/atropos/run_qwen2_5-3b_atropos_grpo.sh trainer.atropos.api_url=http://10.0.0.5:8000
# Start run-api and your environments (or use launch_atropos_verl_services.py) first.
set -xeuo pipefail

MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-3B-Instruct}
ATROPOS_API_URL=${ATROPOS_API_URL:-http://localhost:8000}
TRAIN_FILES=${TRAIN_FILES:-$HOME/data/gsm8k/train.parquet}   # local dataset for the GRPO fallback
VAL_FILES=${VAL_FILES:-$HOME/data/gsm8k/test.parquet}
TOTAL_STEPS=${TOTAL_STEPS:-500}
LR=${LR:-3e-6}
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-64}       # groups per step; sequences per step = TRAIN_BATCH_SIZE x ROLLOUT_N
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-32}
PPO_MICRO_BATCH_SIZE_PER_GPU=${PPO_MICRO_BATCH_SIZE_PER_GPU:-8}
ROLLOUT_N=${ROLLOUT_N:-8}                     # the environments' group_size
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-512}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-1024}
LORA_RANK=${LORA_RANK:-64}
LORA_ALPHA=${LORA_ALPHA:-32}
USE_KL_LOSS=${USE_KL_LOSS:-True}
KL_LOSS_COEF=${KL_LOSS_COEF:-0.001}
ENTROPY_COEFF=${ENTROPY_COEFF:-0}
PARAM_OFFLOAD=${PARAM_OFFLOAD:-False}
OPTIMIZER_OFFLOAD=${OPTIMIZER_OFFLOAD:-False}
ROLLOUT_TP=${ROLLOUT_TP:-1}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
NNODES=${NNODES:-1}
SAVE_FREQ=${SAVE_FREQ:-50}
LOGGER=${LOGGER:-"['console','wandb']"}
PROJECT_NAME=${PROJECT_NAME:-verl_atropos}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen2_5_3b_atropos_grpo}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# The project's environment when it exists (scripts/setup.sh gpu), else python3 on PATH.
DEFAULT_PYTHON=python3
[ -x .venv/bin/python ] && DEFAULT_PYTHON=.venv/bin/python
PYTHON=${PYTHON:-$DEFAULT_PYTHON}

"$PYTHON" -m verl.trainer.main_ppo \
    --config-path "$ROOT/recipe/atropos/config" --config-name gsm8k_grpo_example \
    trainer_cls=recipe.atropos.grpo_atropos_trainer.RayGRPOAtroposTrainer \
    trainer.atropos.api_url="$ATROPOS_API_URL" \
    data.train_files="$TRAIN_FILES" data.val_files="$VAL_FILES" \
    data.train_batch_size="$TRAIN_BATCH_SIZE" \
    data.max_prompt_length="$MAX_PROMPT_LENGTH" data.max_response_length="$MAX_RESPONSE_LENGTH" \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    actor_rollout_ref.model.lora_rank="$LORA_RANK" actor_rollout_ref.model.lora_alpha="$LORA_ALPHA" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr="$LR" \
    actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE" \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$PPO_MICRO_BATCH_SIZE_PER_GPU" \
    actor_rollout_ref.actor.use_kl_loss="$USE_KL_LOSS" actor_rollout_ref.actor.kl_loss_coef="$KL_LOSS_COEF" \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.entropy_coeff="$ENTROPY_COEFF" \
    actor_rollout_ref.actor.fsdp_config.param_offload="$PARAM_OFFLOAD" \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload="$OPTIMIZER_OFFLOAD" \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n="$ROLLOUT_N" \
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP" \
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION" \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$PPO_MICRO_BATCH_SIZE_PER_GPU" \
    actor_rollout_ref.rollout.load_format=safetensors actor_rollout_ref.rollout.layered_summon=True \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu="$PPO_MICRO_BATCH_SIZE_PER_GPU" \
    actor_rollout_ref.ref.fsdp_config.param_offload=True \
    trainer.total_training_steps="$TOTAL_STEPS" trainer.save_freq="$SAVE_FREQ" \
    trainer.logger="$LOGGER" trainer.project_name="$PROJECT_NAME" trainer.experiment_name="$EXPERIMENT_NAME" \
    trainer.n_gpus_per_node="$N_GPUS_PER_NODE" trainer.nnodes="$NNODES" \
    "$@"
