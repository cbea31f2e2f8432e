"""A minimal writer for ONNX model files, without the ``onnx`` package.

It encodes just enough of the ONNX protobuf schema (model, graph, node, attribute, tensor, value info) to build
small graphs of standard operators. posekit uses it to build tiny stand-in models with the exact interface of real
exports (same input/output names, layouts and shapes) so that the pre- and post-processing of the pipelines can be
tested with known outputs, and so that users can write a fake model for their own card.

Example::

    g = GraphBuilder()
    x = g.input("input", [None, 3, 64, 64])
    y = g.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
    g.output(y, "pooled", [None, 3])
    open("m.onnx", "wb").write(g.to_bytes())
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence

import numpy as np

__all__ = ["GraphBuilder"]

# TensorProto.DataType
_DTYPES = {
    np.dtype(np.float32): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.bool_): 9,
    np.dtype(np.float64): 11,
}
_DTYPE_NAMES = {"float32": 1, "float": 1, "int64": 7, "int32": 6, "uint8": 2, "bool": 9, "float64": 11}


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _f_int(field: int, v: int) -> bytes:
    return _key(field, 0) + _varint(int(v))


def _f_bytes(field: int, b: bytes) -> bytes:
    return _key(field, 2) + _varint(len(b)) + b


def _f_str(field: int, s: str) -> bytes:
    return _f_bytes(field, s.encode("utf-8"))


def _f_float(field: int, v: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", float(v))


def _tensor(name: str, arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr)
    if arr.dtype not in _DTYPES:
        raise ValueError(f"initializer {name!r}: unsupported dtype {arr.dtype}")
    out = b"".join(_f_int(1, d) for d in arr.shape)
    out += _f_int(2, _DTYPES[arr.dtype]) + _f_str(8, name) + _f_bytes(9, arr.tobytes())
    return out


def _value_info(name: str, shape: Sequence[int | str | None] | None, elem_type: int) -> bytes:
    tensor_type = _f_int(1, elem_type)
    if shape is not None:
        dims = b""
        for i, d in enumerate(shape):
            if isinstance(d, (int, np.integer)):
                dims += _f_bytes(1, _f_int(1, int(d)))
            else:
                dims += _f_bytes(1, _f_str(2, d if isinstance(d, str) else f"d{i}"))
        tensor_type += _f_bytes(2, dims)
    type_proto = _f_bytes(1, tensor_type)
    return _f_str(1, name) + _f_bytes(2, type_proto)


def _attribute(name: str, value) -> bytes:
    # AttributeProto: name=1, f=2, i=3, s=4, t=5, floats=7, ints=8, type=20
    out = _f_str(1, name)
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return out + _f_int(3, int(value)) + _f_int(20, 2)
    if isinstance(value, float):
        return out + _f_float(2, value) + _f_int(20, 1)
    if isinstance(value, str):
        return out + _f_bytes(4, value.encode()) + _f_int(20, 3)
    if isinstance(value, np.ndarray):
        return out + _f_bytes(5, _tensor("", value)) + _f_int(20, 4)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, np.integer)) for v in value):
            return out + b"".join(_f_int(8, int(v)) for v in value) + _f_int(20, 7)
        return out + b"".join(_f_float(7, float(v)) for v in value) + _f_int(20, 6)
    raise ValueError(f"attribute {name!r}: unsupported value {value!r}")


class GraphBuilder:
    """Build a single-graph ONNX model node by node (default opset 17)."""

    def __init__(self, opset: int = 17, name: str = "posekit_graph") -> None:
        self.opset = opset
        self.name = name
        self._nodes: list[bytes] = []
        self._inits: list[bytes] = []
        self._inputs: list[bytes] = []
        self._outputs: list[bytes] = []
        self._count = 0

    def _fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def input(self, name: str, shape: Sequence[int | str | None], dtype: str = "float32") -> str:
        """Declare a graph input; ``None`` or a string in ``shape`` is a dynamic dimension."""
        self._inputs.append(_value_info(name, shape, _DTYPE_NAMES[dtype]))
        return name

    def const(self, value, dtype=None, name: str | None = None) -> str:
        """Add an initializer (constant tensor) and return its name."""
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        name = name or self._fresh("const")
        self._inits.append(_tensor(name, arr))
        return name

    def node(self, op_type: str, inputs: Iterable[str], num_outputs: int = 1, outputs: Sequence[str] | None = None,
             **attrs) -> str | list[str]:
        """Add a node; returns its output name (or the list of names when ``num_outputs > 1``)."""
        outs = list(outputs) if outputs else [self._fresh(op_type.lower()) for _ in range(num_outputs)]
        body = b"".join(_f_str(1, i) for i in inputs) + b"".join(_f_str(2, o) for o in outs)
        body += _f_str(3, self._fresh("n_" + op_type)) + _f_str(4, op_type)
        body += b"".join(_f_bytes(5, _attribute(k, v)) for k, v in attrs.items())
        self._nodes.append(body)
        return outs[0] if len(outs) == 1 else outs

    def output(self, tensor: str, name: str, shape: Sequence[int | str | None] | None = None,
               dtype: str = "float32") -> str:
        """Expose ``tensor`` as a graph output called ``name`` (through an Identity node)."""
        self.node("Identity", [tensor], outputs=[name])
        self._outputs.append(_value_info(name, shape, _DTYPE_NAMES[dtype]))
        return name

    def to_bytes(self) -> bytes:
        graph = b"".join(_f_bytes(1, n) for n in self._nodes) + _f_str(2, self.name)
        graph += b"".join(_f_bytes(5, t) for t in self._inits)
        graph += b"".join(_f_bytes(11, v) for v in self._inputs)
        graph += b"".join(_f_bytes(12, v) for v in self._outputs)
        opset = _f_str(1, "") + _f_int(2, self.opset)
        model = _f_int(1, 8) + _f_str(2, "posekit") + _f_bytes(8, opset) + _f_bytes(7, graph)
        return model

    def save(self, path) -> str:
        with open(path, "wb") as f:
            f.write(self.to_bytes())
        return str(path)
