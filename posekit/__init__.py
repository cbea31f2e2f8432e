"""posekit: multi-person 2D human pose estimation (bottom-up, one-stage and top-down)."""

__version__ = "0.1.0"

from posekit.schema import COCO17, CROWDPOSE14, MPII16, OPENPOSE18, KeypointSchema, get_schema  # noqa: E402

__all__ = ["__version__", "KeypointSchema", "get_schema", "COCO17", "OPENPOSE18", "CROWDPOSE14", "MPII16"]
