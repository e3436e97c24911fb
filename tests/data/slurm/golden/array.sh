#!/bin/bash
#SBATCH --job-name=hpcfleet-r1-evaluate-2
#SBATCH --account=project_465000001
#SBATCH --partition=small-g
#SBATCH --qos=normal
#SBATCH --time=2-01:01:01
#SBATCH --nodes=2
#SBATCH --cpus-per-task=8
#SBATCH --mem=1500M
#SBATCH --gres=gpu:4
#SBATCH --array=0-2
#SBATCH --dependency=afterok:4242:4243
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --exclude=nid001,nid002
#SBATCH --output=/scratch/p/hpcfleet/r1/evaluate/logs/2/%a.out
#SBATCH --error=/scratch/p/hpcfleet/r1/evaluate/logs/2/%a.err
#SBATCH --chdir=/scratch/p/hpcfleet/r1/evaluate
#SBATCH --exclusive
#SBATCH --constraint=mi250x
export HPCFLEET_ARRAY_INDEX="${SLURM_ARRAY_TASK_ID:-0}"
umask 077
if ! type module >/dev/null 2>&1; then
  for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash \
      /etc/profile.d/modules.sh /usr/share/Modules/init/bash /usr/share/modules/init/bash; do
    if [ -r "$init" ]; then . "$init"; break; fi
  done
fi
module load LUMI/24.03 partition/G
export HF_HOME="/scratch/project_465000001/hf"
cd /scratch/p/hpcfleet/r1/evaluate || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    export HPCFLEET_ARRAY_VALUE=bg
    apptainer exec --rocm -B /scratch /appl/pytorch.sif python3 evaluate.py --lang bg
    ;;
  1)
    export HPCFLEET_ARRAY_VALUE=cs
    apptainer exec --rocm -B /scratch /appl/pytorch.sif python3 evaluate.py --lang cs
    ;;
  2)
    export HPCFLEET_ARRAY_VALUE=da
    apptainer exec --rocm -B /scratch /appl/pytorch.sif python3 evaluate.py --lang da
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
