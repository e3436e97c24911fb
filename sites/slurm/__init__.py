"""SLURM scheduler: command/parse pairs over any `Transport`.

Modules: `script` (pure `render_sbatch`), `scheduler` (commands and `SlurmScheduler`),
`parse` (squeue/sacct output, `SLURM_STATES`), `probes` (site check).
"""

from __future__ import annotations

from sites.slurm.scheduler import SlurmScheduler

__all__ = ["SlurmScheduler"]
