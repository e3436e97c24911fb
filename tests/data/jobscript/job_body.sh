umask 077
if ! type module >/dev/null 2>&1; then
  for init in /etc/profile.d/lmod.sh /usr/share/lmod/lmod/init/bash \
      /etc/profile.d/modules.sh /usr/share/Modules/init/bash /usr/share/modules/init/bash; do
    if [ -r "$init" ]; then . "$init"; break; fi
  done
fi
module load LUMI/24.03 partition/G
export HF_HOME='/scratch/hf cache'
export PATTERN='*.txt'
cd '/scratch/my project/$USER/run1' || exit 1
case "${HPCFLEET_ARRAY_INDEX:-0}" in
  0)
    export HPCFLEET_ARRAY_VALUE=fi
    export NOTE='say "hi"
bye'
    apptainer exec '/appl/pytorch image.sif' python3 eval.py --lang fi '$(touch canary)' 'a;b' 'it'"'"'s'
    ;;
  1)
    apptainer exec '/appl/pytorch image.sif' bash -c 'echo `date` $HOME
exit 0'
    ;;
  *)
    echo "hpcfleet: this job has no task ${HPCFLEET_ARRAY_INDEX}" >&2; exit 97
    ;;
esac
