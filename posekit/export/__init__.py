"""Model export: :mod:`posekit.export.onnx` (OpenPose -> ONNX + a ``kind: paf`` model card)."""
