"""``posekit compare``: pose pipelines of every paradigm side by side on the same images -- accuracy (the numbers
of ``posekit evaluate``, by crowd level, box recall), cost (per image, per stage, versus people), a controlled
scaling sweep, a multi-stage study, and a self-contained report (``docs/compare.md``)."""

from posekit.compare.core import machine_info, run_compare
from posekit.compare.spec import CompareConfig, PipelineSpec, load_config, parse_pipeline_arg

__all__ = ["run_compare", "CompareConfig", "PipelineSpec", "parse_pipeline_arg", "load_config", "machine_info"]
