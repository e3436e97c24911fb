#!/bin/bash
# hpcfleet local job "hpcfleet-run1-prepare-1"
# tasks: 1; task i runs with HPCFLEET_ARRAY_INDEX=i
# resources: nodes=1 cpus=2 gpus=0 time_seconds=600 (only the time limit is enforced)
umask 077
export HPCFLEET_RUN_ID=run1
export HPCFLEET_STAGE=prepare
cd /home/me/.hpcfleet/work/run1/prepare || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    python3 prepare.py --seed 1
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
