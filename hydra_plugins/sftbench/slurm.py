"""Hydra's submitit Slurm launcher, reporting a refused submission as one line with Slurm's own message.

Selected by conf/hydra/launcher/slurm.yaml; it lives here because Hydra takes launchers only from the
hydra_plugins namespace. Everything else (job arrays, resources, the results layout) is submitit's and Hydra's.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from rich.console import Console


class SlurmLauncher(SubmititSlurmLauncher):
    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        from submitit.core.utils import FailedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as e:  # sbatch's non-zero exit (or a job that died outside its run): its stderr
            Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] Slurm: {str(e).strip()}", highlight=False)
            sys.exit(2)  # SystemExit passes through Hydra's error printer: no traceback
