#!/bin/bash
# hpcfleet local job "hpcfleet-r1-train-1"
# tasks: 1; task i runs with HPCFLEET_ARRAY_INDEX=i
# resources: nodes=1 cpus=1 gpus=0 time_seconds=3600 (only the time limit is enforced)
# 3 copies of each task on this machine (sites.launcher)
umask 077
export HPCFLEET_RUN_ID=r1
export MASTER_ADDR=127.0.0.1
export MASTER_PORT=$((20000 + $$ % 12000))
hpcfleet_fan_out() {
  local n=$1 rank status=0 pids=()
  shift
  for ((rank = 0; rank < n; rank++)); do
    RANK=$rank LOCAL_RANK=$rank NODE_RANK=0 WORLD_SIZE=$n "$@" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  return $status
}
cd /scratch/p/hpcfleet/r1/train || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    hpcfleet_fan_out 3 python3 train.py --name 'it'"'"'s $(not run)'
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
