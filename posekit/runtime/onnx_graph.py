"""A small node-by-node builder of ONNX models (on top of ``onnx.helper``).

posekit uses it to build tiny stand-in models with the exact interface of real exports (same input/output names,
layouts and shapes) so that the pre- and post-processing of the pipelines can be tested with known outputs, and so
that users can write a fake model for their own card.

Example::

    g = GraphBuilder()
    x = g.input("input", [None, 3, 64, 64])
    y = g.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
    g.output(y, "pooled", [None, 3])
    open("m.onnx", "wb").write(g.to_bytes())
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from onnx import TensorProto, helper, numpy_helper

__all__ = ["GraphBuilder"]

_DTYPE_NAMES = {"float32": TensorProto.FLOAT, "float": TensorProto.FLOAT, "int64": TensorProto.INT64,
                "int32": TensorProto.INT32, "uint8": TensorProto.UINT8, "bool": TensorProto.BOOL,
                "float64": TensorProto.DOUBLE}


def _shape(shape: Sequence[int | str | None] | None):
    """``None`` or a string in ``shape`` is a dynamic dimension (a string names it)."""
    if shape is None:
        return None
    return [d if isinstance(d, (int, str)) else None for d in shape]


class GraphBuilder:
    """Build a single-graph ONNX model node by node (default opset 17)."""

    def __init__(self, opset: int = 17, name: str = "posekit_graph") -> None:
        self.opset = opset
        self.name = name
        self._nodes: list = []
        self._inits: list = []
        self._inputs: list = []
        self._outputs: list = []
        self._count = 0

    def _fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def input(self, name: str, shape: Sequence[int | str | None], dtype: str = "float32") -> str:
        """Declare a graph input; ``None`` or a string in ``shape`` is a dynamic dimension."""
        self._inputs.append(helper.make_tensor_value_info(name, _DTYPE_NAMES[dtype], _shape(shape)))
        return name

    def const(self, value, dtype=None, name: str | None = None) -> str:
        """Add an initializer (constant tensor) and return its name."""
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        name = name or self._fresh("const")
        self._inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, op_type: str, inputs: Iterable[str], num_outputs: int = 1, outputs: Sequence[str] | None = None,
             **attrs) -> str | list[str]:
        """Add a node; returns its output name (or the list of names when ``num_outputs > 1``)."""
        outs = list(outputs) if outputs else [self._fresh(op_type.lower()) for _ in range(num_outputs)]
        self._nodes.append(helper.make_node(op_type, list(inputs), outs, name=self._fresh("n_" + op_type), **attrs))
        return outs[0] if len(outs) == 1 else outs

    def output(self, tensor: str, name: str, shape: Sequence[int | str | None] | None = None,
               dtype: str = "float32") -> str:
        """Expose ``tensor`` as a graph output called ``name`` (through an Identity node)."""
        self.node("Identity", [tensor], outputs=[name])
        self._outputs.append(helper.make_tensor_value_info(name, _DTYPE_NAMES[dtype], _shape(shape)))
        return name

    def to_bytes(self) -> bytes:
        graph = helper.make_graph(self._nodes, self.name, self._inputs, self._outputs, initializer=self._inits)
        model = helper.make_model(graph, producer_name="posekit", opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        return model.SerializeToString()

    def save(self, path) -> str:
        with open(path, "wb") as f:
            f.write(self.to_bytes())
        return str(path)
