#!/bin/bash
# hpcfleet local job "hpcfleet-run1-evaluate-2"
# tasks: 3; task i runs with HPCFLEET_ARRAY_INDEX=i
# resources: nodes=1 cpus=1 gpus=1 time_seconds=3600 (only the time limit is enforced)
umask 077
if ! type module >/dev/null 2>&1; then
  for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash \
      /etc/profile.d/modules.sh /usr/share/Modules/init/bash /usr/share/modules/init/bash; do
    if [ -r "$init" ]; then . "$init"; break; fi
  done
fi
module load python/3.11
cd /home/me/.hpcfleet/work/run1/evaluate || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    export HPCFLEET_ARRAY_VALUE=bg
    apptainer exec t.sif python3 evaluate.py --lang bg
    ;;
  1)
    export HPCFLEET_ARRAY_VALUE=cs
    apptainer exec t.sif python3 evaluate.py --lang cs
    ;;
  2)
    export HPCFLEET_ARRAY_VALUE=fi
    apptainer exec t.sif python3 evaluate.py --lang fi
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
