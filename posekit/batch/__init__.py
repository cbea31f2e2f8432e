"""Batch pose inference on Ray (``posekit predict --engine ray``): exactly once, resumable, results identical to
one process. :mod:`posekit.batch.plan` (sources, ids, units, shards, merge; no Ray) and
:mod:`posekit.batch.engine` (the Ray Data pipeline: ``run_batch(BatchConfig(...))``). See docs/scale.md."""

from posekit.batch.engine import BatchConfig, BatchSummary, run_batch

__all__ = ["BatchConfig", "BatchSummary", "run_batch"]
