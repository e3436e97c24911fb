#!/bin/bash
#SBATCH --job-name=hpcfleet-r1-train-3
#SBATCH --account=project_465000001
#SBATCH --partition=small-g
#SBATCH --qos=normal
#SBATCH --time=2-00:00:00
#SBATCH --nodes=1
#SBATCH --cpus-per-task=1
#SBATCH --gres=gpu:8
#SBATCH --dependency=afternotok:4300:4301
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --exclude=nid007
#SBATCH --output=/scratch/p/hpcfleet/r1/train/logs/3/0.out
#SBATCH --error=/scratch/p/hpcfleet/r1/train/logs/3/0.err
#SBATCH --chdir=/scratch/p/hpcfleet/r1/train
export HPCFLEET_ARRAY_INDEX="${SLURM_ARRAY_TASK_ID:-0}"
umask 077
for hpcfleet_ended in /scratch/p/hpcfleet/r1/train/attempt-1/logs/ended /scratch/p/hpcfleet/r1/train/attempt-2/logs/ended; do
  if [ -e "$hpcfleet_ended" ]; then
    echo "hpcfleet: an earlier segment ended (exit $(cat "$hpcfleet_ended")): nothing to resume" >&2
    exit 0
  fi
done
if ! type module >/dev/null 2>&1; then
  for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash \
      /etc/profile.d/modules.sh /usr/share/Modules/init/bash /usr/share/modules/init/bash; do
    if [ -r "$init" ]; then . "$init"; break; fi
  done
fi
module load LUMI/24.03 partition/G
export HPCFLEET_RUN_ID=r1
export HPCFLEET_STAGE=train
export HPCFLEET_ATTEMPT=3
export HF_HOME="/scratch/project_465000001/hf"
cd /scratch/p/hpcfleet/r1/train || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    python3 train.py --resume
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
hpcfleet_status=$?
printf '%s\n' "$hpcfleet_status" > /scratch/p/hpcfleet/r1/train/attempt-3/logs/ended
exit "$hpcfleet_status"
