#!/bin/bash
#SBATCH --job-name=hpcfleet-r1-train-1
#SBATCH --account=project_465000001
#SBATCH --partition=standard-g
#SBATCH --time=01:00:00
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=7
#SBATCH --gres=gpu:8
#SBATCH --output=/scratch/p/hpcfleet/r1/train/logs/1/0.out
#SBATCH --error=/scratch/p/hpcfleet/r1/train/logs/1/0.err
#SBATCH --chdir=/scratch/p/hpcfleet/r1/train
export HPCFLEET_ARRAY_INDEX="${SLURM_ARRAY_TASK_ID:-0}"
umask 077
if ! type module >/dev/null 2>&1; then
  for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash \
      /etc/profile.d/modules.sh /usr/share/Modules/init/bash /usr/share/modules/init/bash; do
    if [ -r "$init" ]; then . "$init"; break; fi
  done
fi
module purge
module use /appl/local/csc/modulefiles
module load pytorch/2.4
export HPCFLEET_RUN_ID=r1
export MIOPEN_USER_DB_PATH="/tmp/${USER}-miopen"
export CACHE="$HOME/cache"
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export WANDB_MODE=offline
export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"
export MASTER_PORT=$((20000 + SLURM_JOB_ID % 12000))
cd /scratch/p/hpcfleet/r1/train || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    srun --cpus-per-task=7 --kill-on-bad-exit=1 --cpu-bind=cores --gpus-per-task=1 bash -c 'export RANK="${SLURM_PROCID}" LOCAL_RANK="${SLURM_LOCALID}" NODE_RANK="${SLURM_NODEID}" WORLD_SIZE="${SLURM_NTASKS}"; exec "$@"' hpcfleet-task apptainer exec --rocm --bind /pfs,/scratch,/flash /scratch/project_465000001/c.sif python3 train.py --name 'it'"'"'s $(not run)'
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
