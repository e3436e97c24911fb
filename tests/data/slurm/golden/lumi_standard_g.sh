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
module load LUMI/24.03 partition/G
cd /scratch/project_465000001/hpcfleet/runs/r1/train/work || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    python3 train.py
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
