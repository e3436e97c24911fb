#!/bin/bash
#SBATCH --job-name=hpcfleet-r1-train-1
#SBATCH --account=project_465000001
#SBATCH --partition=standard-g
#SBATCH --qos=normal
#SBATCH --time=2-00:00:00
#SBATCH --nodes=4
#SBATCH --cpus-per-task=7
#SBATCH --mem=0
#SBATCH --gres=gpu:8
#SBATCH --exclusive
#SBATCH --output=/scratch/project_465000001/hpcfleet/runs/r1/train/attempt-1/logs/0.out
#SBATCH --error=/scratch/project_465000001/hpcfleet/runs/r1/train/attempt-1/logs/0.err
#SBATCH --chdir=/scratch/project_465000001/hpcfleet/runs/r1/train/work
#SBATCH --constraint=site-wide
#SBATCH --hint=nomultithread
export HPCFLEET_ARRAY_INDEX="${SLURM_ARRAY_TASK_ID:-0}"
umask 077
if ! type module >/dev/null 2>&1; then
  for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash \
      /etc/profile.d/modules.sh /usr/share/Modules/init/bash /usr/share/modules/init/bash; do
    if [ -r "$init" ]; then . "$init"; break; fi
  done
fi
module load LUMI/24.03 partition/G
export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"
export MASTER_PORT=$((20000 + SLURM_JOB_ID % 12000))
cd /scratch/project_465000001/hpcfleet/runs/r1/train/work || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    srun --cpus-per-task=7 --kill-on-bad-exit=1 bash -c 'export RANK="${SLURM_PROCID}" LOCAL_RANK="${SLURM_LOCALID}" NODE_RANK="${SLURM_NODEID}" WORLD_SIZE="${SLURM_NTASKS}"; exec "$@"' hpcfleet-task python3 train.py
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
