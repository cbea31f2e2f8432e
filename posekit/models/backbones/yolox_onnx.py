"""Initialise a :class:`~posekit.models.backbones.cspdarknet.CSPDarknet` from the backbone of a YOLOX ONNX export.

Official RTMO training starts its CSPDarknet from a COCO-trained YOLOX detector. The detectors that exist here are
ONNX exports (``../shared/weights/yolox_nano_*.onnx``), where the exporter has folded every BatchNorm into the
convolution before it (weight ``W``, bias ``b``). This module reads those convolutions back:

* :func:`load_cspdarknet_from_onnx` walks the ONNX ``Conv`` nodes in graph order, which is the order in which the
  exported network ran them, and pairs them with the backbone's convolutions in the order *they* run (recorded
  with forward hooks on one dummy input). Every pair must agree on shape, groups, stride and padding; the first
  disagreement raises ValueError naming both sides. Each BatchNorm then becomes the identity plus ``b``
  (``gamma = 1``, ``beta = b``, ``mean = 0``, ``var = 1 - eps``), so in eval mode the backbone computes exactly
  the exported function. ``verify=True`` runs the ONNX file with onnxruntime up to the backbone outputs and
  returns the largest difference.
* :func:`recalibrate_folded_batchnorm` makes those BatchNorms trainable without changing the eval-mode function:
  it measures each convolution's per-channel output mean ``mu`` and variance ``var`` on real images and sets
  ``mean = mu``, ``var``, ``gamma = sqrt(var + eps)``, ``beta = b + mu``. In training mode the batch statistics
  are then close to the stored ones, so fine-tuning starts from the pretrained function instead of
  renormalising every layer.

Why by hand: no library maps ONNX initialisers with generated names (``onnx::Conv_1571``) back to modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..layers import ConvModule

__all__ = ["YOLOX_NANO", "load_cspdarknet_from_onnx", "recalibrate_folded_batchnorm", "conv_modules_in_run_order"]

#: CSPDarknet settings of YOLOX-nano (the backbone of ``yolox_nano_*.onnx``).
YOLOX_NANO = dict(deepen_factor=0.33, widen_factor=0.25, use_depthwise=True)


def conv_modules_in_run_order(backbone: nn.Module, input_size: Tuple[int, int] = (64, 64)) -> List[ConvModule]:
    """The backbone's :class:`ConvModule` s in the order its forward pass calls them (one dummy ``(1, 3, H, W)``
    input; ``input_size`` is ``(W, H)``)."""
    order: List[ConvModule] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: order.append(mod))
             for m in backbone.modules() if isinstance(m, ConvModule)]
    was = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, 3, input_size[1], input_size[0]))
    finally:
        backbone.train(was)
        for h in hooks:
            h.remove()
    return order


def _onnx_convs(model) -> list:
    """``(node, weight ndarray, bias ndarray | None, attrs)`` for every Conv node of an ONNX graph, in order."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        if node.input[1] not in inits:
            raise ValueError(f"ONNX Conv node {node.name!r}: its weight {node.input[1]!r} is not an initialiser")
        w = numpy_helper.to_array(inits[node.input[1]])
        b = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
        attrs = {a.name: (list(a.ints) if a.ints else a.i) for a in node.attribute}
        out.append((node, w, b, attrs))
    return out


def load_cspdarknet_from_onnx(backbone: nn.Module, path, *, verify: bool = True, rtol: float = 1e-4) -> dict:
    """Copy the first convolutions of the ONNX file at ``path`` into ``backbone`` (see the module docstring).

    Args:
        backbone: a CSPDarknet built with the exported detector's settings (YOLOX-nano: :data:`YOLOX_NANO`).
        path: the ONNX file; its input must be ``(1, 3, H, W)`` BGR 0..255 with the backbone first in its graph.
        verify: run the file with onnxruntime on a random image of its input size (a dynamic size: 128 x 128)
            and compare the backbone's outputs with the ONNX tensors they correspond to; a difference above
            ``rtol`` of a tensor's largest value raises ValueError (the weights are then left loaded but wrong:
            for instance Megvii's own YOLOX export orders the two 1x1 convs of each CSP layer the other way).

    Returns:
        ``{"convs": n, "max_abs_diff": float | None, "max_rel_diff": float | None}``.

    Raises:
        FileNotFoundError: no file at ``path``. ValueError: the file is not ONNX, or its convolutions do not match
        the backbone's (the message names the conv index, the ONNX node and both shapes).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError / various for non-ONNX bytes
        raise ValueError(f"{path} is not a readable ONNX model: {e}") from e
    ours = conv_modules_in_run_order(backbone)
    theirs = _onnx_convs(model)
    if len(theirs) < len(ours):
        raise ValueError(f"{path}: {len(theirs)} Conv nodes, fewer than the backbone's {len(ours)} convolutions")
    for i, (mod, (node, w, b, attrs)) in enumerate(zip(ours, theirs)):
        conv = mod.conv
        want = (tuple(conv.weight.shape), conv.groups, list(conv.stride), list(conv.padding) * 2)
        got = (tuple(w.shape), int(attrs.get("group", 1)), list(attrs.get("strides", [1, 1])),
               list(attrs.get("pads", [0, 0, 0, 0])))
        if want != got:
            raise ValueError(f"{path}: conv {i} (ONNX node {node.name!r}) has weight/groups/strides/pads {got}, "
                             f"the backbone's conv {i} expects {want}; is the backbone built with the exported "
                             f"detector's settings (YOLOX-nano: {YOLOX_NANO})?")
        if mod.bn is None:
            raise ValueError(f"backbone conv {i} has no BatchNorm to hold the folded bias of {node.name!r}")
    with torch.no_grad():
        for mod, (_node, w, b, _attrs) in zip(ours, theirs):
            mod.conv.weight.copy_(torch.from_numpy(np.array(w)))
            bn = mod.bn
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(np.array(b)) if b is not None else torch.zeros_like(bn.bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
    report = {"convs": len(ours), "max_abs_diff": None, "max_rel_diff": None}
    if verify:
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        hw = (dims[3], dims[2]) if len(dims) == 4 and dims[2] > 0 and dims[3] > 0 else (128, 128)
        report.update(_verify(backbone, model, ours, theirs, hw))
        if report["max_rel_diff"] > rtol:
            raise ValueError(f"{path}: the backbone loaded from this file differs from the file's own backbone "
                             f"outputs by {report['max_rel_diff']:.3g} of their scale (bound {rtol:g}); its "
                             f"convolutions are not in MMDetection's CSPDarknet order")
    return report


def _verify(backbone, model, ours, theirs, input_size) -> dict:
    """Run the ONNX graph up to the tensors that match the backbone outputs; compare them."""
    import onnx
    import onnxruntime as ort

    # each backbone output is the activation of some conv: find which, then the ONNX tensor of that activation
    outs_of: dict = {}
    hooks = [m.register_forward_hook(lambda mod, _i, o: outs_of.setdefault(id(mod), o)) for m in ours]
    x = torch.rand(1, 3, input_size[1], input_size[0]) * 255.0
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            feats = backbone(x)
    finally:
        backbone.train(was)
        for h in hooks:
            h.remove()
    by_tensor = {id(outs_of[id(m)]): i for i, m in enumerate(ours)}
    names = []
    consumers: dict = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for f in feats:
        i = by_tensor.get(id(f))
        if i is None:
            raise ValueError("a backbone output is not the output of a ConvModule; cannot verify")
        conv_out = theirs[i][0].output[0]
        # SiLU exported as x * sigmoid(x): the Mul that takes the conv output
        muls = [n for n in consumers.get(conv_out, []) if n.op_type == "Mul"]
        names.append(muls[0].output[0] if muls else conv_out)
    g = onnx.helper.make_graph(model.graph.node, "backbone", model.graph.input,
                               [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names],
                               model.graph.initializer)
    sub = onnx.helper.make_model(g, opset_imports=model.opset_import)
    sess = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(names, {model.graph.input[0].name: x.numpy()})
    diffs = [float(np.abs(a - f.numpy()).max()) for a, f in zip(got, feats)]
    rels = [d / max(float(np.abs(a).max()), 1e-12) for d, a in zip(diffs, got)]
    return {"max_abs_diff": max(diffs), "max_rel_diff": max(rels)}


@torch.no_grad()
def recalibrate_folded_batchnorm(network: nn.Module, modules: Iterable[ConvModule],
                                 batches: Iterable[torch.Tensor]) -> int:
    """Give folded BatchNorms (identity plus bias) the statistics of real data without changing the eval-mode
    function (see the module docstring).

    Args:
        modules: the ConvModules whose BatchNorm holds a folded bias (``running_mean == 0``,
            ``running_var == 1 - eps``, ``weight == 1``).
        network: the module run on each batch (in eval mode; its mode is restored), e.g. the backbone.
        batches: input tensors.

    Returns the number of images seen. Raises ValueError when ``batches`` is empty.
    """
    mods = list(modules)
    sums = {id(m): None for m in mods}
    n_px = {id(m): 0 for m in mods}

    def hook(mod, inp, _out):
        y = mod.conv(inp[0]).double()
        c = y.shape[1]
        flat = y.transpose(0, 1).reshape(c, -1)
        s = torch.stack((flat.sum(1), (flat * flat).sum(1)))
        sums[id(mod)] = s if sums[id(mod)] is None else sums[id(mod)] + s
        n_px[id(mod)] += flat.shape[1]

    hooks = [m.register_forward_hook(hook) for m in mods]
    images = 0
    was = network.training
    network.eval()
    try:
        for x in batches:
            network(x)
            images += int(x.shape[0])
    finally:
        network.train(was)
        for h in hooks:
            h.remove()
    if images == 0:
        raise ValueError("recalibrate_folded_batchnorm needs at least one batch of images")
    for m in mods:
        s, n = sums[id(m)], n_px[id(m)]
        mu = s[0] / n
        var = (s[1] / n - mu * mu).clamp(min=0)
        bn = m.bn
        bias = bn.bias.double().clone()
        bn.running_mean.copy_(mu.float())
        bn.running_var.copy_(var.float())
        bn.weight.copy_(torch.sqrt(var + bn.eps).float())
        bn.bias.copy_((bias + mu).float())
    return images
