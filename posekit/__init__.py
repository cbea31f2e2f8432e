"""posekit: multi-person 2D human pose estimation (bottom-up, one-stage and top-down).

The light names (schemas, ``Person``) import eagerly; ``PoseEstimator``, ``build_model`` and ``load_weights`` import
on first use so that ``import posekit`` stays fast and does not pull in torch or onnxruntime.
"""

__version__ = "0.1.0"

from posekit.schema import COCO17, CROWDPOSE14, MPII16, OPENPOSE18, KeypointSchema, get_schema  # noqa: E402
from posekit.structures import Person  # noqa: E402

_LAZY = {
    "PoseEstimator": ("posekit.pipelines.estimator", "PoseEstimator"),
    "build_model": ("posekit.models.presets", "build_model"),
    "list_models": ("posekit.models.presets", "list_models"),
    "load_weights": ("posekit.models.weights", "load_weights"),
    "load_card": ("posekit.runtime.cards", "load_card"),
    "evaluate_coco_keypoints": ("posekit.evaluation.coco", "evaluate_coco_keypoints"),
    "draw_people": ("posekit.viz", "draw_people"),
    "read_image": ("posekit.data.io", "read_image"),
}

__all__ = [
    "__version__", "KeypointSchema", "get_schema", "COCO17", "OPENPOSE18", "CROWDPOSE14", "MPII16", "Person",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'posekit' has no attribute {name!r}")
