"""``vhsup batch``: upscale a whole library, resumably, locally or on a Ray cluster.

Python API::

    from vhsup.batch import BatchConfig, run_batch
    summary = run_batch(BatchConfig(src=Path("tapes"), out=Path("tapes-hd"), options={"model": "compact-x4"}))
    summary.exit_status  # 0 all done, 3 some failed, 130 interrupted (143 by SIGTERM, 129 by SIGHUP)

The manifest (``OUT/.vhsup/jobs.db``) is the source of truth; see
:mod:`vhsup.batch.manifest`. Nothing here imports torch until a run starts.
"""

from __future__ import annotations

from vhsup.batch.discover import Found, discover
from vhsup.batch.manifest import Job, Manifest
from vhsup.batch.runner import BatchConfig, JobReport, Reporter, Summary, run_batch

__all__ = ["BatchConfig", "Found", "Job", "JobReport", "Manifest", "Reporter", "Summary", "discover", "run_batch"]
