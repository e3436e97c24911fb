"""The real SLURM + sshd test sandbox: script ``hpc-sandbox``, helper ``sandbox``, fixtures."""
