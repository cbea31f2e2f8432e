"""A thin onnxruntime runner: thread count, graph optimisation, provider fallback, interface checks."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from posekit.runtime.cards import ModelCard

__all__ = ["OnnxModel"]


class OnnxModel:
    """Wraps ``onnxruntime.InferenceSession``.

    Args:
        path: the ``.onnx`` file (or its bytes).
        threads: intra-op threads (None: onnxruntime's default).
        providers: execution providers in order of preference; unavailable ones are dropped with a warning and
            ``CPUExecutionProvider`` is always the fallback.
        card: when given, the file's input name, rank/layout and fixed sizes and the output names are checked
            against the card (a clear error for a file that does not match, e.g. the wrong model).
        spinning: whether onnxruntime's intra-op worker threads busy-wait for work after each run (session option
            ``session.intra_op.allow_spinning``); None keeps onnxruntime's default (on). Off frees the cores for
            the Python pre/post-processing between runs (docs/inference.md "Speed").

    Attributes:
        input_name, input_shape (dims as ints, or None when dynamic), output_names, fixed_batch (the batch size
        when the file fixes it, else None), providers (the ones in use).
    """

    def __init__(self, path: str | Path | bytes, threads: int | None = None,
                 providers: Sequence[str] | None = None, card: ModelCard | None = None,
                 spinning: bool | None = None) -> None:
        import onnxruntime as ort

        self.path = "<bytes>" if isinstance(path, (bytes, bytearray)) else str(path)
        self._source = path
        if not isinstance(path, (bytes, bytearray)) and not Path(path).is_file():
            raise FileNotFoundError(f"ONNX file not found: {path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if spinning is not None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.spinning = spinning
        available = ort.get_available_providers()
        wanted = list(providers) if providers else ["CPUExecutionProvider"]
        use = []
        for p in wanted:
            if p in available:
                use.append(p)
            else:
                warnings.warn(f"onnxruntime execution provider {p!r} is not available here "
                              f"(available: {available}); falling back to CPUExecutionProvider", stacklevel=2)
        if "CPUExecutionProvider" not in use:
            use.append("CPUExecutionProvider")
        try:
            self.session = ort.InferenceSession(bytes(path) if isinstance(path, (bytes, bytearray)) else str(path),
                                                sess_options=opts, providers=use)
        except Exception as e:  # onnxruntime raises its own exception types
            raise RuntimeError(f"{self.path}: onnxruntime cannot load this file as an ONNX model: {e}") from None
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.input_names = [i.name for i in inputs]
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.fixed_batch = self.input_shape[0] if self.input_shape else None
        if card is not None:
            self.check(card)

    def check(self, card: ModelCard) -> None:
        """Check the file against ``card`` (input name, rank, channels, fixed sizes, output names)."""
        where = f"weights {self.path} do not match model card '{card.name}' ({card.source})"
        if card.input_name not in self.input_names:
            raise ValueError(f"{where}: the file's input is {self.input_name!r}, the card expects "
                             f"{card.input_name!r} — is this the right file for the card?")
        if card.input_name != self.input_name:
            self.input_name = card.input_name
        shape = [d if isinstance(d, int) else None for d in
                 next(i for i in self.session.get_inputs() if i.name == card.input_name).shape]
        self.input_shape = shape
        self.fixed_batch = shape[0] if shape else None
        if len(shape) != 4:
            raise ValueError(f"{where}: input {card.input_name!r} has rank {len(shape)}, expected a 4-D image batch")
        c_axis, h_axis, w_axis = (1, 2, 3) if card.input_layout == "NCHW" else (3, 1, 2)
        if shape[c_axis] is not None and shape[c_axis] != 3:
            raise ValueError(f"{where}: input shape {shape} has {shape[c_axis]} channels on axis {c_axis} for "
                             f"layout {card.input_layout}; expected 3")
        w, h = card.input_size
        if card.resize in ("letterbox", "letterbox-center", "fixed", "crop"):
            for axis, want, what in ((h_axis, h, "height"), (w_axis, w, "width")):
                if shape[axis] is not None and shape[axis] != want:
                    raise ValueError(f"{where}: the file's input {what} is {shape[axis]} (shape {shape}), the card "
                                     f"says input.size {list(card.input_size)}")
        missing = [n for n in card.output_names if n not in self.output_names]
        if missing:
            raise ValueError(f"{where}: outputs {missing} not in the file (it has {self.output_names})")

    def has_op(self, op_type: str) -> bool:
        """Whether the file's main graph has a node of ``op_type`` (e.g. ``NonMaxSuppression``: the export already
        does NMS). Reads the graph once (weights stored outside the file are not loaded)."""
        if not hasattr(self, "_op_types"):
            import onnx

            src = self._source
            model = (onnx.load_from_string(bytes(src)) if isinstance(src, (bytes, bytearray))
                     else onnx.load(str(src), load_external_data=False))
            self._op_types = {n.op_type for n in model.graph.node}
        return op_type in self._op_types

    def run(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run on a float32 batch; returns ``{output name: array}``. A file with a fixed batch of 1 given a larger
        batch runs item by item and the results are concatenated along axis 0."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        names = list(outputs) if outputs else self.output_names
        if self.fixed_batch == 1 and batch.shape[0] != 1:
            parts = [self.session.run(names, {self.input_name: batch[i:i + 1]}) for i in range(batch.shape[0])]
            if not parts:
                return {n: np.zeros((0,), np.float32) for n in names}
            return {n: np.concatenate([p[j] for p in parts], axis=0) for j, n in enumerate(names)}
        res = self.session.run(names, {self.input_name: batch})
        return dict(zip(names, res))

    def __repr__(self) -> str:
        return (f"OnnxModel({os.path.basename(self.path)!r}, input={self.input_name}{self.input_shape}, "
                f"outputs={self.output_names}, providers={self.providers})")
