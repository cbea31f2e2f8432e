"""Training-side parity with MMPose: posekit's own codec, losses and backward pass against MMPose's dumps.

A reference folder (the layout of ``../shared/reference/mmpose-tiny-train/<name>/``, see its README.md) holds one
fixed batch with its ground truth in model-input pixels (``batch.pt``), MMPose's codec targets (``targets.pt``), its
loss terms (``loss.pt``), every parameter's gradient after ``total.backward()`` (``grads.pt``) and ``meta.json``
(configs, ``params_without_grad``, per-module grad norms, ``fp64_check``). The weights are those of the forward
reference ``../mmpose-tiny/<name>/`` (``meta.json`` + ``state_dict.pt``).

:func:`check_topdown_folder` builds the posekit model from that MMPose config, loads the weights, switches to eval
mode (as the dump did) and compares, one :class:`ParityRow` per model and term:

* ``targets.<key>``: posekit's codec (built from the reference ``codec_cfg``) encoding the batch's ground truth,
  against ``targets.pt`` -- heatmaps / SimCC labels to :data:`TARGET_ATOL` absolute, keypoint weights exactly;
* each loss term of ``loss.pt`` (``loss_kpt``, CPM/Hourglass ``stage{i}.loss_kpt``, ``total``), computed with
  :mod:`posekit.losses.topdown` / :mod:`posekit.losses.stage` on posekit's own targets -- relative difference
  within :data:`LOSS_RTOL`; ``loss_kpt (posekit train, <preset>)`` is the same value computed by
  :class:`~posekit.training.tasks.topdown.TopDownTask`'s loss for the official preset of the reference's config
  (default task options), i.e. what ``posekit train`` optimises;
* ``trainmode.loss_kpt``: the same loss with the model in ``train()`` (BatchNorm batch statistics; DropPath /
  Dropout kept in eval as in the dump);
* ``grads.<top module>``: the gradient of every parameter after ``total.backward()``; the difference is the worst
  over the module's tensors of ``max|g_posekit - g_mmpose| / max|g_mmpose|`` (the issue's criterion: relative to
  the largest gradient of the tensor), tolerance :data:`GRAD_RTOL`; the values are the module's gradient L2 norms
  (MMPose's from ``meta.grads.grad_norm_per_top_module``);
* ``grads.params_without_grad``: the set of parameters that get no gradient (must be the same set) and
  ``grads.names``: every ``grads.pt`` key is a posekit parameter of the same shape.

Tolerances (from the dumps' ``fp64_check``: the same MMPose step in float64 moves the top-down losses by <= 4e-7
relative and the gradients by <= 6.5e-6 relative L2 per tensor, so that is the size of fp32 rounding noise):
a loss within 1e-5 relative and a gradient within 1e-4 of its tensor's largest entry leave > 10x margin over that
noise, while a wrong target, weight or normalisation moves them by 1e-3 .. 1.

:func:`check_rtmo_folder` does the same for RTMO (``meta.kind == "rtmo"``; also ``assignment.pt``): for every
training phase of ``loss.pt`` (``phase0`` the config, ``phase1`` after ``RTMOModeSwitchHook``, ``phase2`` with the
auxiliary box loss), the SimOTA assignment and its targets, the DCC values, every loss term and the total, the
gradients, what ``posekit train`` optimises at that phase's epoch, and the ``trainmode.*`` losses; see its
docstring for the noise-aware tolerances the DCC's fp32 conditioning needs.

:func:`check_reference` runs every folder of a reference root.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional

import numpy as np
import torch

__all__ = ["ParityRow", "check_topdown_folder", "check_rtmo_folder", "official_preset", "check_reference",
           "forward_folder_for", "format_rows", "all_passed", "TARGET_ATOL", "LOSS_RTOL", "GRAD_RTOL",
           "RTMO_TENSOR_RTOL", "NOISE_MARGIN"]

#: heatmaps / SimCC labels: absolute difference (keypoint weights must be equal)
TARGET_ATOL = 1e-6
#: loss terms: relative difference
LOSS_RTOL = 1e-5
#: gradients: max |difference| of a tensor relative to the largest |gradient| of that tensor
GRAD_RTOL = 1e-4
#: MMPose config-file prefixes -> the posekit preset of that published recipe (RTMPose configs are named after it)
_CONFIG_PRESETS = {"td-hm_res18_": "simplebaseline-r18", "td-hm_res50_": "simplebaseline-r50",
                   "td-hm_ViTPose-small": "vitpose-s", "td-hm_ViTPose-base": "vitpose-b",
                   "td-hm_ViTPose-large": "vitpose-l", "td-hm_ViTPose-huge": "vitpose-h", "td-hm_cpm_": "cpm",
                   "td-hm_hourglass52_": "hourglass-52"}


@dataclass
class ParityRow:
    """One compared quantity. ``passed`` is None for a row that is listed but not checked (``note`` says why)."""

    model: str
    term: str
    posekit: Optional[float]
    mmpose: Optional[float]
    max_diff: Optional[float]
    tolerance: Optional[float]
    passed: Optional[bool]
    note: str = ""

    @property
    def status(self) -> str:
        if self.passed is None:
            return self.note or "not checked"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "status": self.status}


# ----------------------------------------------------------------------------------------------- file access
def _load_pt(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing reference file: {path}")
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported with its path
        raise ValueError(f"malformed reference file {path}: {type(e).__name__}: {e}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"malformed reference file {path}: expected a dict of tensors, got {type(data).__name__}")
    return dict(data)


def _load_json(path: Path) -> dict:
    from posekit.data.io import read_json

    data = read_json(path, "reference file")
    if not isinstance(data, dict):
        raise ValueError(f"malformed reference file {path}: expected a JSON object")
    return data


def _need(d: Mapping, key: str, path: Path):
    if key not in d:
        raise ValueError(f"malformed reference file {path}: no {key!r} (has {sorted(d)[:12]})")
    return d[key]


def forward_folder_for(train_dir: Path, forward_root: Optional[Path] = None) -> Path:
    """The forward reference of ``train_dir`` (``.../mmpose-tiny-train/<name>``): ``forward_root/<name>``, by
    default ``<train_dir>/../../mmpose-tiny/<name>``."""
    train_dir = Path(train_dir)
    root = Path(forward_root) if forward_root is not None else train_dir.parent.parent / "mmpose-tiny"
    return root / train_dir.name


def _load_folder(train_dir: Path, forward_dir, files: Iterable[str]) -> dict:
    """A reference folder's ``meta.json`` (``meta``, ``meta_path``, ``name``), its forward reference's ``meta.json``
    and ``state_dict.pt`` (``fmeta``, ``state``) and each ``<file>.pt`` of ``files`` under its stem."""
    fwd = Path(forward_dir) if forward_dir is not None else forward_folder_for(train_dir)
    meta_path = train_dir / "meta.json"
    meta = _load_json(meta_path)
    out = {"meta_path": meta_path, "meta": meta, "name": str(meta.get("name", train_dir.name)),
           "fmeta": _load_json(fwd / "meta.json"), "state": _load_pt(fwd / "state_dict.pt")}
    for stem in files:
        out[stem] = _load_pt(train_dir / f"{stem}.pt")
    return out


# ----------------------------------------------------------------------------------------------- helpers
def _codec(cfg: Mapping[str, Any], overrides: Optional[Mapping[str, Any]]):
    from posekit.codecs.heatmap import heatmap_codec_from_mmpose
    from posekit.codecs.simcc import simcc_codec_from_mmpose

    cfg = {**cfg, **(overrides or {})}
    if cfg.get("type") == "SimCCLabel":
        return simcc_codec_from_mmpose(cfg)
    return heatmap_codec_from_mmpose(cfg)


def _samples(batch: Mapping[str, torch.Tensor], path: Path) -> List[int]:
    idx = sorted({int(k.split(".")[0][len("sample"):]) for k in batch if k.startswith("sample")})
    if not idx:
        raise ValueError(f"malformed reference file {path}: no sample<b>.keypoints entries")
    return idx


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _row_rel(model: str, term: str, got: float, ref: float, tol: float) -> ParityRow:
    d = _rel(got, ref)
    return ParityRow(model, term, got, ref, d, tol, bool(d <= tol))


def _stochastic_to_eval(model: torch.nn.Module) -> None:
    """Keep Dropout / DropPath deterministic (the dump's ``trainmode`` kept them in eval)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) or type(m).__name__ == "DropPath":
            m.eval()


def _losses(raw: Mapping[str, Any], t: Mapping[str, torch.Tensor]) -> dict:
    """posekit's loss terms under MMPose's names: ``loss_kpt`` and (multi-stage) ``stage{i}.loss_kpt``."""
    from posekit.losses.stage import stage_l2_loss
    from posekit.losses.topdown import keypoint_mse_loss, kl_discret_loss

    w = t["keypoint_weights"]
    if "pred_x" in raw:  # RTMPose: KLDiscretLoss(beta 10, label softmax), summed over instances, / K
        return {"loss_kpt": kl_discret_loss((raw["pred_x"], raw["pred_y"]), (t["x_labels"], t["y_labels"]), w)}
    if "stage_heatmaps" in raw:  # CPM / Hourglass: every stage against the same targets, summed
        out = stage_l2_loss(list(raw["stage_heatmaps"]), t["heatmaps"], w)
        terms = {f"stage{i}.loss_kpt": out[f"loss_stage{i + 1}"] for i in range(len(raw["stage_heatmaps"]))}
        return {"loss_kpt": out["loss"], **terms}
    return {"loss_kpt": keypoint_mse_loss(raw["heatmaps"], t["heatmaps"], w)}


def official_preset(meta: Mapping[str, Any]) -> str:
    """The posekit preset of the reference's MMPose config (``rtmpose-t_8xb256-...py`` -> ``rtmpose-t``), or ``""``
    when the config is not one of :data:`~posekit.models.topdown_presets.TOPDOWN_PRESETS`."""
    from posekit.models.topdown_presets import TOPDOWN_PRESETS

    cfg = Path(str(meta.get("config_file_rel", ""))).name
    for prefix, preset in _CONFIG_PRESETS.items():
        if cfg.startswith(prefix):
            return preset
    stem = cfg.split("_")[0]
    return stem if stem in TOPDOWN_PRESETS else ""


def _task_loss(raw: Mapping[str, Any], t: Mapping[str, torch.Tensor], preset: str) -> torch.Tensor:
    """The loss ``posekit train`` (task ``topdown``, default task options, model ``preset``) optimises on this
    batch."""
    from posekit.training.tasks.topdown import TopDownTask

    task = TopDownTask()
    task.model_name = preset
    batch = {"keypoint_weights": t["keypoint_weights"]}
    if "x_labels" in t:
        batch.update(x_labels=t["x_labels"], y_labels=t["y_labels"])
    else:
        batch["heatmaps"] = t["heatmaps"]
    loss, _ = task._loss(dict(raw), batch)
    return loss


# ----------------------------------------------------------------------------------------------- the check
def check_topdown_folder(train_dir, forward_dir=None, *, codec_overrides: Optional[Mapping[str, Any]] = None,
                         trainmode: bool = True) -> List[ParityRow]:
    """Compare posekit with one top-down reference folder (see the module docstring).

    Args:
        train_dir: ``mmpose-tiny-train/<name>`` (batch.pt, targets.pt, loss.pt, grads.pt, meta.json).
        forward_dir: the forward reference with ``meta.json`` + ``state_dict.pt`` (default:
            :func:`forward_folder_for`).
        codec_overrides: entries replacing the reference ``codec_cfg`` (e.g. ``{"sigma": 3}``), to see a wrong
            setting reported as a failure.
        trainmode: also compare ``trainmode.loss_kpt`` when loss.pt has it.

    Returns:
        the rows; raises FileNotFoundError / ValueError naming a missing or malformed file.
    """
    from posekit.models.topdown_presets import build_topdown_from_mmpose_meta, load_topdown_weights

    train_dir = Path(train_dir)
    f = _load_folder(train_dir, forward_dir, ("batch", "targets", "loss", "grads"))
    meta_path, meta, name, fmeta, state = f["meta_path"], f["meta"], f["name"], f["fmeta"], f["state"]
    batch, targets, ref_loss, ref_grads = f["batch"], f["targets"], f["loss"], f["grads"]
    codec_cfg = _need(meta, "codec_cfg", meta_path)
    rows: List[ParityRow] = []

    # -------- targets
    codec = _codec(codec_cfg, codec_overrides)
    idx = _samples(batch, train_dir / "batch.pt")
    enc = []
    for b in idx:
        kp = _need(batch, f"sample{b}.keypoints", train_dir / "batch.pt").numpy()
        vis = _need(batch, f"sample{b}.keypoints_visible", train_dir / "batch.pt").numpy()
        enc.append(codec.encode(kp, vis))
    for key in enc[0]:
        worst, exact = 0.0, key == "keypoint_weights"
        for b, e in zip(idx, enc):
            ref = _need(targets, f"sample{b}.{key}", train_dir / "targets.pt").numpy()
            got = e[key]
            if got.size != ref.size:
                raise ValueError(f"targets.pt sample{b}.{key}: MMPose shape {ref.shape}, posekit {got.shape}")
            worst = max(worst, float(np.abs(got.reshape(ref.shape).astype(np.float64) - ref).max(initial=0.0)))
        tol = 0.0 if exact else TARGET_ATOL
        got_sum = float(sum(float(np.sum(e[key], dtype=np.float64)) for e in enc))
        ref_sum = float(sum(float(targets[f"sample{b}.{key}"].double().sum()) for b in idx))
        rows.append(ParityRow(name, f"targets.{key} (sum)", got_sum, ref_sum, worst, tol, bool(worst <= tol),
                              "exact" if exact else "absolute"))

    t = {"keypoint_weights": torch.from_numpy(np.concatenate([e["keypoint_weights"] for e in enc]))}
    if "keypoint_x_labels" in enc[0]:
        t["x_labels"] = torch.from_numpy(np.concatenate([e["keypoint_x_labels"] for e in enc]))
        t["y_labels"] = torch.from_numpy(np.concatenate([e["keypoint_y_labels"] for e in enc]))
    else:
        t["heatmaps"] = torch.from_numpy(np.stack([e["heatmaps"] for e in enc]))

    # -------- model, eval mode as the dump
    model = build_topdown_from_mmpose_meta(fmeta)
    load_topdown_weights(model, state)
    model.eval()
    x = _need(batch, "inputs", train_dir / "batch.pt").float()

    # -------- losses and grads
    model.zero_grad(set_to_none=True)
    raw = model(x)
    ours = _losses(raw, t)
    ref_terms = {k: float(v) for k, v in ref_loss.items() if "loss" in k and not k.startswith("trainmode.")}
    if "loss_kpt" not in ref_terms:
        raise ValueError(f"malformed reference file {train_dir / 'loss.pt'}: no 'loss_kpt'")
    total = ours["loss_kpt"]
    for k in sorted(ref_terms, key=lambda s: (s != "loss_kpt", s)):
        if k not in ours:
            rows.append(ParityRow(name, k, None, ref_terms[k], None, LOSS_RTOL, False,
                                  "posekit computes no such term"))
            continue
        rows.append(_row_rel(name, k, float(ours[k].detach()), ref_terms[k], LOSS_RTOL))
    if "total" in ref_loss:
        rows.append(_row_rel(name, "total", float(total.detach()), float(ref_loss["total"]), LOSS_RTOL))
    preset = official_preset(meta)
    task_loss = float(_task_loss(raw, t, preset).detach())
    rows.append(_row_rel(name, f"loss_kpt (posekit train, {preset or 'no preset'})", task_loss,
                         ref_terms["loss_kpt"], LOSS_RTOL))
    total.backward()
    rows += _grad_rows(name, model, ref_grads, meta, train_dir)

    if trainmode and "trainmode.loss_kpt" in ref_loss:
        rows.append(_trainmode_row(name, model, x, t, float(ref_loss["trainmode.loss_kpt"])))
    return rows


def _trainmode_row(name: str, model: torch.nn.Module, x: torch.Tensor, t: Mapping[str, torch.Tensor],
                   ref: float) -> ParityRow:
    """``trainmode.loss_kpt``: BatchNorm on batch statistics. With a batch of 2 a BatchNorm over a 1x1 map (the
    innermost hourglass level) normalises 2 values whose variance can be below its eps: the loss is then
    ill-conditioned and fp32 rounding alone moves it by ~1e-2. The tolerance is therefore
    ``max(LOSS_RTOL, 4 x |fp32 - fp64| / |fp64|)`` of posekit's own loss (the fp32 noise of each implementation,
    twice, with a factor 2 of margin); the note gives that noise."""
    import copy

    def loss(m, dtype):
        m = m.train()
        _stochastic_to_eval(m)
        with torch.no_grad():
            tt = {k: v.to(dtype) for k, v in t.items()}
            return float(_losses(m(x.to(dtype)), tt)["loss_kpt"])

    got = loss(model, torch.float32)
    model.eval()
    ref64 = loss(copy.deepcopy(model).double(), torch.float64)
    noise = _rel(got, ref64)
    tol = max(LOSS_RTOL, 4 * noise)
    d = _rel(got, ref)
    return ParityRow(name, "trainmode.loss_kpt", got, ref, d, tol, bool(d <= tol),
                     f"posekit fp32 vs fp64: {noise:.1e}")


def _grad_rows(name: str, model: torch.nn.Module, ref_grads: Mapping[str, torch.Tensor], meta: Mapping,
               train_dir: Path) -> List[ParityRow]:
    rows: List[ParityRow] = []
    params = dict(model.named_parameters())
    grads_meta = meta.get("grads") or {}
    no_grad_ref = grads_meta.get("params_without_grad", {})
    if isinstance(no_grad_ref, Mapping):  # keyed by phase ("" for the top-down models)
        no_grad_ref = [p for v in no_grad_ref.values() for p in v]
    no_grad_ours = sorted(k for k, p in params.items() if p.grad is None)
    missing = sorted(set(ref_grads) - set(params))
    bad_shape = sorted(k for k in ref_grads if k in params and tuple(params[k].shape) != tuple(ref_grads[k].shape))
    ok = not missing and not bad_shape
    rows.append(ParityRow(name, "grads.names", float(len(params)), float(len(ref_grads) + len(no_grad_ref)),
                          float(len(missing) + len(bad_shape)), 0.0, ok,
                          "" if ok else f"not posekit parameters: {missing[:3]}; shape differs: {bad_shape[:3]}"))
    same = set(no_grad_ours) == set(no_grad_ref)
    diff = sorted(set(no_grad_ours) ^ set(no_grad_ref))
    rows.append(ParityRow(name, "grads.params_without_grad", float(len(no_grad_ours)), float(len(no_grad_ref)),
                          float(len(diff)), 0.0, same, "" if same else f"differ: {diff[:4]}"))
    norms_ref = grads_meta.get("grad_norm_per_top_module", {})
    if isinstance(norms_ref, Mapping) and "" in norms_ref:
        norms_ref = norms_ref[""]
    groups: dict = {}
    for k, g in ref_grads.items():
        if k in params and k not in bad_shape:
            groups.setdefault(k.split(".")[0], []).append(k)
    for top, keys in sorted(groups.items()):
        worst, worst_key, sq = 0.0, "", 0.0
        for k in keys:
            ref = ref_grads[k].double()
            got = params[k].grad
            if got is None:
                worst, worst_key = math.inf, k
                continue
            got = got.double()
            sq += float((got ** 2).sum())
            d = float((got - ref).abs().max()) / max(float(ref.abs().max()), 1e-30)
            if d > worst:
                worst, worst_key = d, k
        ref_norm = norms_ref.get(top) if isinstance(norms_ref, Mapping) else None
        if ref_norm is None:
            ref_norm = math.sqrt(sum(float((ref_grads[k].double() ** 2).sum()) for k in keys))
        rows.append(ParityRow(name, f"grads.{top} (L2 norm; {len(keys)} tensors)", math.sqrt(sq), float(ref_norm),
                              worst, GRAD_RTOL, bool(worst <= GRAD_RTOL), f"worst: {worst_key}"))
    return rows


# ----------------------------------------------------------------------------------------------- RTMO
#: the MMPose loss classes posekit's RTMOCriterion implements: type, posekit's weight field, and the settings it
#: implements (MMPose's constructor default, the value posekit computes)
_RTMO_LOSSES = {
    "loss_cls": ("VariFocalLoss", "cls", {"reduction": ("mean", "sum"), "alpha": (0.75, 0.75), "gamma": (2.0, 2.0)}),
    "loss_bbox": ("IoULoss", "bbox", {"reduction": ("mean", "sum"), "mode": ("log", "square"), "eps": (1e-16, 1e-16)}),
    "loss_oks": ("OKSLoss", "oks", {"reduction": ("mean", "none"), "mode": ("linear", "linear"),
                                    "norm_target_weight": (False, False)}),
    "loss_vis": ("BCELoss", "vis", {"reduction": ("mean", "mean"), "use_sigmoid": (False, False)}),
    "loss_mle": ("MLECCLoss", "mle", {"reduction": ("mean", "mean"), "mode": ("log", "log"),
                                      "use_target_weight": (False, True)}),
    "loss_bbox_aux": ("L1Loss", "bbox_aux", {"reduction": ("mean", "sum"), "use_target_weight": (False, False)}),
}
#: MMPose 1.3 SimOTAAssigner constructor defaults (what a config leaves out)
_SIMOTA_DEFAULTS = dict(center_radius=2.5, candidate_topk=10, iou_weight=3.0, cls_weight=1.0, oks_weight=3.0,
                        vis_weight=0.0, dynamic_k_indicator="iou", use_keypoints_for_center=False)
#: a tensor compared "relative" is within max(this, NOISE_MARGIN x the fp32 noise)
RTMO_TENSOR_RTOL = 1e-5
#: the noise-aware tolerances: ``max(base, NOISE_MARGIN x (posekit's fp32 noise + MMPose's fp32 noise))``, each
#: noise the relative fp32-vs-fp64 difference of that implementation. MMPose's is taken as the larger of
#: posekit's (the same network and operations: measured on the reference, MMPose's per-tensor gradient noise is
#: 0.5x .. 2x posekit's) and what ``meta.fp64_check`` records for the quantity (a loss term; a top module's L2)
NOISE_MARGIN = 2.0


def _noise_tol(base: float, own: float, theirs: Optional[float]) -> float:
    return max(base, NOISE_MARGIN * (own + max(own, theirs or 0.0)))


def _mmpose_noise(meta: Mapping, ph: str, what: str, key: str) -> Optional[float]:
    """MMPose's own fp32-vs-fp64 difference from ``meta.fp64_check.<ph>``: ``what='loss'`` a loss term's relative
    difference, ``what='grad'`` a top module's relative L2 gradient difference; None when not recorded."""
    chk = ((meta.get("fp64_check") or {}).get(ph) or {})
    try:
        if what == "loss":
            return float(chk["loss_terms"][key]["rel_diff"])
        return float(chk["grad_rel_l2_diff_per_top_module"][key])
    except (KeyError, TypeError, ValueError):
        return None


def _rtmo_losses_cfg(meta: Mapping, path: Path) -> tuple:
    """(base weights, auxiliary box-loss weight) from ``meta.loss_cfg``; a loss posekit does not implement raises."""
    cfg = _need(meta, "loss_cfg", path)
    base: dict = {v[1]: 0.0 for k, v in _RTMO_LOSSES.items() if k != "loss_bbox_aux"}  # absent: not computed
    aux = 1.0
    for key, c in cfg.items():
        if key not in _RTMO_LOSSES:
            raise ValueError(f"{path}: loss_cfg.{key}: posekit's RTMO criterion has no such loss "
                             f"(has {sorted(_RTMO_LOSSES)})")
        typ, field_, settings = _RTMO_LOSSES[key]
        bad = {k: c.get(k, d) for k, (d, want) in settings.items() if c.get(k, d) != want}
        if c.get("type") != typ or bad:
            raise ValueError(f"{path}: loss_cfg.{key} = {dict(c)}: posekit implements {typ} with "
                             f"{ {k: v[1] for k, v in settings.items()} } (differs: {bad})")
        if key == "loss_bbox_aux":
            aux = float(c.get("loss_weight", 1.0))
        else:
            base[field_] = float(c.get("loss_weight", 1.0))
    base["overlaps_power"] = float(meta.get("overlaps_power", 1.0))
    return base, aux


def _rtmo_phase_weights(meta: Mapping, phase: str, base: Mapping, aux: float, path: Path):
    """posekit's :class:`~posekit.losses.rtmo.RTMOLossWeights` for a phase (``meta.phase_attrs_applied``: the head
    attributes MMPose's hooks set)."""
    from posekit.losses.rtmo import RTMOLossWeights

    attrs = (meta.get("phase_attrs_applied") or {}).get(phase, {})
    w = {**base, "proxy_target_cc": False, "bbox_aux": 0.0}
    fields = {k: v[1] for k, v in _RTMO_LOSSES.items()}  # loss name -> RTMOLossWeights field
    for k, v in attrs.items():
        if k == "proxy_target_cc":
            w[k] = bool(v)
        elif k == "use_aux_loss":
            w["bbox_aux"] = aux if v else 0.0
        elif k.endswith(".loss_weight") and k[:-len(".loss_weight")] in fields:
            w[fields[k[:-len(".loss_weight")]]] = float(v)
        else:
            raise ValueError(f"{path}: phase_attrs_applied.{phase}.{k}: not a setting posekit's RTMO criterion has")
    return RTMOLossWeights(**w)


def _rtmo_assigner(meta: Mapping, path: Path):
    from posekit.losses.rtmo import SimOTAAssigner

    cfg = dict(_need(meta, "assigner_cfg", path))
    if cfg.pop("type", "SimOTAAssigner") != "SimOTAAssigner":
        raise ValueError(f"{path}: assigner_cfg.type must be SimOTAAssigner")
    cfg.pop("oks_calculator", None)  # PoseOKS with the dataset's sigmas (head.loss_oks.sigmas here)
    cfg.pop("iou_calculator", None)
    unknown = set(cfg) - set(_SIMOTA_DEFAULTS)
    if unknown:
        raise ValueError(f"{path}: assigner_cfg has settings posekit's SimOTAAssigner lacks: {sorted(unknown)}")
    return SimOTAAssigner(**{**_SIMOTA_DEFAULTS, **cfg})


def _phase_epochs(meta: Mapping) -> dict:
    """``{phase: first epoch}`` from ``meta.phases[].when`` ("epochs 0..279", "from epoch 280 ...")."""
    import re

    out = {}
    for p in meta.get("phases") or []:
        m = re.search(r"epochs? (\d+)", str(p.get("when", "")))
        if m and p.get("key_prefix"):
            out[str(p["key_prefix"])] = int(m.group(1))
    return out


def _max_epochs(meta: Mapping) -> Optional[int]:
    import re

    tc = meta.get("train_cfg") or {}
    if isinstance(tc, Mapping) and "max_epochs" in tc:
        return int(tc["max_epochs"])
    m = re.search(r"'max_epochs': (\d+)", str(meta.get("train_cfg_note", "")))
    return int(m.group(1)) if m else None


def _rtmo_gts(batch: Mapping[str, torch.Tensor], path: Path, dtype=torch.float32) -> List[dict]:
    idx = _samples(batch, path)
    return [{"boxes": _need(batch, f"sample{b}.bboxes", path).to(dtype),
             "keypoints": _need(batch, f"sample{b}.keypoints", path).to(dtype),
             "visible": _need(batch, f"sample{b}.keypoints_visible", path).to(dtype),
             "areas": _need(batch, f"sample{b}.areas", path).to(dtype)} for b in idx]


def _rtmo_run(model, x, gts, crit, w, backward: bool):
    """One RTMO step: raw output, the criterion's terms and details; gradients from zero when ``backward``."""
    model.zero_grad(set_to_none=True)
    ctx = torch.enable_grad() if backward else torch.no_grad()
    with ctx:
        raw = model(x, with_kpt_offsets=True)
        det: dict = {}
        out = crit(raw, gts, w, details=det)
        if backward:
            out["loss"].backward()
    return raw, out, det


def _weighted(out: Mapping, term: str, w) -> Optional[float]:
    """The MMPose-logged value of ``term`` (loss_* times its weight) from posekit's unweighted terms."""
    if term == "total":
        return float(out["loss"].detach())
    if term in _RTMO_LOSSES:
        if term not in out:
            return None
        return float(out[term].detach()) * float(getattr(w, _RTMO_LOSSES[term][1]))
    if term == "num_samples":
        return max(float(out["num_pos"]), 1.0)
    if term == "overlaps":
        return float(out["overlaps"]) if "overlaps" in out else None
    return None


def _assignment_value(key: str, det: Mapping, w, K: int):
    """posekit's counterpart of an ``assignment.pt`` entry (key without the phase prefix) and how to compare it
    (``exact``, ``rel``: max |diff| / max |MMPose|, ``elem``: elementwise relative, ``pos``: max_overlaps); None
    for a key posekit has no counterpart of."""
    t = det["targets"]
    P = t["priors"].shape[0]
    npos = t["pos"].numel()
    if key == "priors":
        s = t["strides"][:, None]
        return torch.cat([t["priors"], s, s], 1), "exact"
    if key.startswith("img"):
        i, rest = key[3:].split(".", 1)
        a = t["assign"][int(i)]
        gi = a["gt_inds"]
        table = {"valid_mask": ("valid", "exact"), "is_in_boxes_and_centers": ("in_both", "exact"),
                 "cost_matrix": ("cost", "elem"), "pairwise_oks": ("oks", "rel"), "dynamic_ks": ("dynamic_ks", "exact")}
        if rest in table and table[rest][0] in a:
            return a[table[rest][0]], table[rest][1]
        if rest == "pred_scores_sqrt":
            return a["scores_sqrt"][:, None], "rel"
        if rest == "assign.gt_inds":
            return gi + 1, "exact"
        if rest == "assign.labels":
            return torch.where(gi >= 0, 0, -1), "exact"
        if rest == "assign.max_overlaps":
            return torch.where(gi >= 0, a["overlaps"], torch.full_like(a["overlaps"], -1e5)), "pos"
        return None
    ones = torch.ones(npos, K)
    if key.startswith("targets."):
        rest = key[len("targets."):]
        B = len(t["assign"])
        mask = torch.zeros(B * P, dtype=torch.bool)
        mask[t["pos"]] = True
        if npos:
            s = t["prior_stride"][:, None]
            pri = torch.cat([t["prior_xy"], s, s], 1)
        table = {"pos_masks": (mask, "exact"), "obj_targets": (mask.float()[:, None], "exact"),
                 "obj_weights": (torch.ones(B * P, 1), "exact"), "num_pos_per_img":
                 (torch.tensor(t["num_pos_per_img"]), "exact")}
        if npos:
            table.update({"cls_targets": (t["overlaps"][:, None], "rel"), "bbox_targets": (t["boxes"], "exact"),
                          "kpt_targets": (t["keypoints"], "exact"), "vis_targets": (t["visible"], "exact"),
                          "vis_weights": (ones, "exact"), "pos_areas": (t["areas"], "exact"),
                          "pos_priors": (pri, "exact")})
            if "bbox_aux_targets" in det:
                table.update(bbox_aux_targets=(det["bbox_aux_targets"], "rel"),
                             kpt_aux_targets=(det["kpt_aux_targets"], "rel"))
        return table.get(rest)
    if key.startswith("dcc.") and key[4:] in det:
        return det[key[4:]], "rel"
    table = {"loss_oks.per_positive": ("oks_per_positive", w.oks, "rel"), "loss_oks.pred": ("oks_pred", 1.0, "rel"),
             "loss_oks.target": ("oks_target", 1.0, "rel"), "loss_oks.target_weight": ("oks_target_weight", 1.0,
                                                                                          "exact"),
             "loss_mle.per_positive": ("mle_per_positive", w.mle, "rel"), "overlaps": ("cls_targets", 1.0, "rel")}
    if key in table and table[key][0] in det:
        name, scale, kind = table[key]
        v = det[name].detach() * scale
        return (v[:, None] if key == "overlaps" else v), kind
    return None


def _tensor_diff(got: torch.Tensor, ref: torch.Tensor, kind: str) -> float:
    """The difference of one compared tensor (see :func:`_assignment_value`); inf when the shapes differ."""
    got = got.detach().cpu()
    if got.numel() != ref.numel():
        return math.inf
    got = got.reshape(ref.shape)
    if kind == "exact":
        return float((got.double() != ref.double()).sum())
    g, r = got.double(), ref.double()
    if kind == "pos":
        pos_r, pos_g = r > -1e4, g > -1e4
        if not bool((pos_r == pos_g).all()):
            return math.inf
        g, r = g[pos_r], r[pos_r]
    if g.numel() == 0:
        return 0.0
    if kind == "elem":
        return float(((g - r).abs() / r.abs().clamp(min=1.0)).max())
    return float((g - r).abs().max()) / max(float(r.abs().max()), 1e-30)


def _rtmo_value(v: torch.Tensor) -> float:
    """The value column of a tensor row: its sum (float64)."""
    return float(v.detach().double().sum())


def _noise(got32: Optional[torch.Tensor], got64: Optional[torch.Tensor], kind: str) -> float:
    """posekit's own fp32-vs-fp64 difference of a compared tensor (0 when not comparable)."""
    if got32 is None or got64 is None or kind == "exact" or got32.shape != got64.shape:
        return 0.0
    d = _tensor_diff(got32, got64.detach().double(), kind)
    return 0.0 if math.isinf(d) else d


def check_rtmo_folder(train_dir, forward_dir=None, *, trainmode: bool = True) -> List[ParityRow]:
    """Compare posekit's RTMO training step with one RTMO reference folder (``batch.pt``, ``targets.pt``,
    ``assignment.pt``, ``loss.pt``, ``grads.pt``, ``meta.json``; weights from ``forward_dir``).

    Everything comes from the folder: the loss and assigner settings (``meta.loss_cfg``, ``meta.assigner_cfg``,
    ``meta.overlaps_power``), the phases (the ``phase*.`` prefixes of loss.pt, their head attributes in
    ``meta.phase_attrs_applied``, their first epochs in ``meta.phases``). Rows per phase: every loss.pt term, the
    assignment.pt entries (targets of the assignment exact, predictions and DCC values relative), the gradients
    (full tensors where grads.pt has them, else the per-tensor L2 norms of ``{phase}.grad_norm_per_param``), what
    ``posekit train`` optimises with the default schedule of the config's preset at that phase's epoch, and the
    ``trainmode.*`` losses.

    Tolerances: integer / boolean results of the assignment, the targets it gathers and the weight rules are
    compared exactly. Values computed from the network carry fp32 rounding that the DCC amplifies (its softmax over
    the bins is sharp: a 3e-6 relative change of the predicted box moves the bin probabilities by 1e-4, and
    MMPose's own fp64 check moves its gradients by ~1e-4): the model is also run in float64, and a value passes
    within ``max(base, NOISE_MARGIN x (posekit's fp32 noise + MMPose's))`` (:func:`_noise_tol`; base
    :data:`LOSS_RTOL` for losses, :data:`RTMO_TENSOR_RTOL` for tensors, :data:`GRAD_RTOL` for gradients); the note
    gives the noise.
    """
    import copy

    from posekit.losses.rtmo import RTMOCriterion
    from posekit.models.rtmo import RTMO_PRESETS, build_rtmo_from_mmpose_meta, load_mmpose_rtmo_checkpoint

    train_dir = Path(train_dir)
    f = _load_folder(train_dir, forward_dir, ("batch", "targets", "loss", "assignment", "grads"))
    meta_path, meta, name, fmeta, state = f["meta_path"], f["meta"], f["name"], f["fmeta"], f["state"]
    batch, targets, ref_loss, assignment, ref_grads = (f[k] for k in ("batch", "targets", "loss", "assignment",
                                                                      "grads"))
    base, aux = _rtmo_losses_cfg(meta, meta_path)
    assigner = _rtmo_assigner(meta, meta_path)
    rows: List[ParityRow] = []

    # -------- ground truth as the head reads it (targets.pt) = posekit's ground-truth dicts
    bpath = train_dir / "batch.pt"
    gts = _rtmo_gts(batch, bpath)
    idx = _samples(batch, bpath)
    ours = {"bbox_labels": lambda g: torch.zeros(len(g["boxes"]), dtype=torch.int8),
            "gt_instance_labels.labels": lambda g: torch.zeros(len(g["boxes"]), dtype=torch.int8),
            "gt_instance_labels.bboxes": lambda g: g["boxes"], "gt_instance_labels.keypoints": lambda g: g["keypoints"],
            "gt_instance_labels.keypoints_visible": lambda g: g["visible"],
            "gt_instance_labels.areas": lambda g: g["areas"]}
    keys = sorted({k.split(".", 1)[1] for k in targets if k.startswith("sample")})
    for key in keys:
        if key not in ours:
            rows.append(ParityRow(name, f"targets.{key}", None, None, None, None, None, "not checked (no posekit "
                                  "counterpart)"))
            continue
        diff, got_s, ref_s = 0.0, 0.0, 0.0
        for b, g in zip(idx, gts):
            ref = _need(targets, f"sample{b}.{key}", train_dir / "targets.pt")
            got = ours[key](g)
            diff += _tensor_diff(got, ref, "exact")
            got_s += _rtmo_value(got)
            ref_s += _rtmo_value(ref)
        rows.append(ParityRow(name, f"targets.{key} (sum)", got_s, ref_s, diff, 0.0, diff == 0, "exact"))

    # -------- the model (eval, the keypoint-offset branch on) in fp32, and an fp64 copy for the noise estimate
    model = build_rtmo_from_mmpose_meta(fmeta)
    load_mmpose_rtmo_checkpoint(model, state, strict=True)
    model.eval()
    model64 = copy.deepcopy(model).double()
    x = _need(batch, "inputs", bpath).float()
    gts64 = _rtmo_gts(batch, bpath, torch.float64)
    crit, crit64 = RTMOCriterion(model.head, assigner), RTMOCriterion(model64.head, assigner)
    K = model.head.num_keypoints
    phases = sorted({k.split(".", 1)[0] for k in ref_loss if not k.startswith("trainmode.") and "." in k})
    if not phases:
        raise ValueError(f"malformed reference file {train_dir / 'loss.pt'}: no '<phase>.<term>' entries "
                         f"(has {sorted(ref_loss)[:8]})")
    epochs = _phase_epochs(meta)
    max_epochs = _max_epochs(meta)
    preset = Path(str(meta.get("config_file_rel", ""))).name.split("_")[0]
    preset = preset if preset in RTMO_PRESETS else ""
    order = (meta.get("shared_copy_trimmed") or {}).get("per_param_norm_order")
    phase_w = {ph: _rtmo_phase_weights(meta, ph, base, aux, meta_path) for ph in phases}
    for i, ph in enumerate(phases):
        w = phase_w[ph]
        _, out, det = _rtmo_run(model, x, gts, crit, w, backward=True)
        _, out64, det64 = _rtmo_run(model64, x.double(), gts64, crit64, w, backward=True)
        # loss terms and logged metrics
        for k in sorted(k for k in ref_loss if k.startswith(ph + ".")):
            term = k[len(ph) + 1:]
            ref = float(ref_loss[k])
            got = _weighted(out, term, w)
            if got is None:
                known = "loss" in term or term == "total"
                rows.append(ParityRow(name, k, None, ref, None, LOSS_RTOL, False if known else None,
                                      "posekit computes no such term" if known else "not checked (a logged metric "
                                      "posekit has no counterpart of)"))
                continue
            if term == "num_samples":
                rows.append(ParityRow(name, k, got, ref, abs(got - ref), 0.0, got == ref, "exact"))
                continue
            noise = _rel(got, _weighted(out64, term, w))
            theirs = _mmpose_noise(meta, ph, "loss", term)
            tol = _noise_tol(LOSS_RTOL, noise, theirs)
            d = _rel(got, ref)
            rows.append(ParityRow(name, k, got, ref, d, tol, bool(d <= tol), f"fp32 vs fp64: posekit {noise:.1e}"
                                  + ("" if theirs is None else f", MMPose {theirs:.1e}")))
        # the assignment and its targets
        for k in sorted(k for k in assignment if k.startswith(ph + ".")):
            sub = k[len(ph) + 1:]
            got = _assignment_value(sub, det, w, K)
            if got is None:
                rows.append(ParityRow(name, f"assign.{k}", None, _rtmo_value(assignment[k]), None, None, None,
                                      "not checked (no posekit counterpart)"))
                continue
            val, kind = got
            g64 = _assignment_value(sub, det64, w, K)
            noise = _noise(val, g64[0] if g64 else None, kind)
            d = _tensor_diff(val, assignment[k], kind)
            tol = 0.0 if kind == "exact" else _noise_tol(RTMO_TENSOR_RTOL, noise, None)
            note = "exact" if kind == "exact" else f"fp32 vs fp64: posekit {noise:.1e}"
            rows.append(ParityRow(name, f"assign.{k}", _rtmo_value(val), _rtmo_value(assignment[k]), d, tol,
                                  bool(d <= tol), note))
        # gradients
        rows += _rtmo_grad_rows(name, ph, model, model64, ref_grads, meta, order)
        # what `posekit train` optimises with the preset's default schedule at this phase's first epoch
        if preset and ph in epochs and max_epochs is not None:
            rows += _rtmo_task_rows(name, ph, epochs[ph], max_epochs, preset, model, x, gts, assigner, phase_w,
                                    phases[i - 1] if i else None, float(ref_loss.get(f"{ph}.total", math.nan)))
    if trainmode:
        rows += _rtmo_trainmode_rows(name, model, x, gts, gts64, assigner, phase_w, ref_loss)
    return rows


def _rtmo_task_rows(name, ph, epoch, max_epochs, preset, model, x, gts, assigner, phase_w, prev, ref_total):
    from types import SimpleNamespace

    from posekit.losses.rtmo import RTMOCriterion
    from posekit.training.tasks.rtmo import RTMOTask

    task = RTMOTask()
    task._task_options(SimpleNamespace(task_options={}, model=SimpleNamespace(name=preset), epochs=max_epochs))
    w = task.weights_at(epoch)
    _, out, _ = _rtmo_run(model, x, gts, RTMOCriterion(model.head, task.assigner), w, backward=False)
    got = float(out["loss"])
    d = _rel(got, ref_total)
    rows = [ParityRow(name, f"{ph}.total (posekit train, {preset}, epoch {epoch})", got, ref_total, d, LOSS_RTOL,
                      bool(d <= LOSS_RTOL and w == phase_w[ph] and task.assigner == assigner),
                      "" if w == phase_w[ph] else f"posekit's weights at epoch {epoch}: {w}")]
    if prev is not None and epoch > 0:
        before = task.weights_at(epoch - 1)
        same = before == phase_w[prev]
        rows.append(ParityRow(name, f"{ph}.schedule (posekit train: epoch {epoch - 1} is still {prev})", float(same),
                              1.0, float(not same), 0.0, same, "" if same else f"posekit's weights: {before}"))
    return rows


def _rtmo_grad_rows(name: str, ph: str, model, model64, ref_grads: Mapping[str, torch.Tensor], meta: Mapping,
                    order: Optional[list]) -> List[ParityRow]:
    """Per top module: full gradient tensors (``{ph}.<param>``) by the issue's criterion, the rest by their L2
    norms (``{ph}.grad_norm_per_param``); each tensor within the noise-aware tolerance (:func:`_noise_tol`)."""
    rows: List[ParityRow] = []
    params = dict(model.named_parameters())
    p64 = dict(model64.named_parameters())
    full = {k[len(ph) + 1:]: v for k, v in ref_grads.items()
            if k.startswith(ph + ".") and k != f"{ph}.grad_norm_per_param"}
    norms = ref_grads.get(f"{ph}.grad_norm_per_param")
    if norms is not None and (order is None or len(order) != norms.numel()):
        raise ValueError(f"malformed reference: grads.pt {ph}.grad_norm_per_param has {norms.numel()} entries but "
                         f"meta.shared_copy_trimmed.per_param_norm_order has {len(order or [])}")
    norm_of = dict(zip(order, norms.tolist())) if norms is not None else {}
    listed = set(full) | set(norm_of)
    bad = sorted(k for k in listed if k not in params)
    bad += sorted(k for k, v in full.items() if k in params and tuple(v.shape) != tuple(params[k].shape))
    rows.append(ParityRow(name, f"grads.{ph}.names", float(len(params)), float(len(listed)), float(len(bad)), 0.0,
                          not bad, "" if not bad else f"not posekit parameters of that shape: {bad[:3]}"))
    no_ref = ((meta.get("grads") or {}).get("params_without_grad") or {}).get(ph, [])
    no_ours = sorted(k for k, p in params.items() if p.grad is None)
    diff = sorted(set(no_ours) ^ set(no_ref))
    rows.append(ParityRow(name, f"grads.{ph}.params_without_grad", float(len(no_ours)), float(len(no_ref)),
                          float(len(diff)), 0.0, not diff, "" if not diff else f"differ: {diff[:4]}"))
    groups: dict = {}
    for k in listed:
        if k in params and k not in bad:
            groups.setdefault((k.split(".")[0], k in full), []).append(k)
    for (top, is_full), keys in sorted(groups.items()):
        worst = (-1.0, "", 0.0, 0.0)  # ratio, name, diff, tol
        theirs = _mmpose_noise(meta, ph, "grad", top)
        largest = (0.0, "-")
        strict = 0
        for k in keys:
            g, g64 = params[k].grad, p64[k].grad
            if g is None:
                worst = (math.inf, k, math.inf, GRAD_RTOL)
                continue
            g, g64 = g.double(), g64.double()
            if is_full:
                r = full[k].double()
                d = float((g - r).abs().max()) / max(float(r.abs().max()), 1e-30)
                noise = float((g - g64).abs().max()) / max(float(g64.abs().max()), 1e-30)
            else:
                n, n64, r = float(g.norm()), float(g64.norm()), norm_of[k]
                d = abs(n - r) / max(r, 1e-30)
                noise = abs(n - n64) / max(n64, 1e-30)
            tol = _noise_tol(GRAD_RTOL, noise, theirs)
            strict += d <= GRAD_RTOL
            if d > largest[0] and d <= 1e3 * tol and noise < 1.0:  # not a gradient that is mathematically ~0
                largest = (d, k)
            if d / tol > worst[0]:
                worst = (d / tol, k, d, tol)
        got_norm = math.sqrt(sum(float((params[k].grad.double() ** 2).sum()) for k in keys
                                 if params[k].grad is not None))
        if is_full:
            ref_norm = math.sqrt(sum(float((full[k].double() ** 2).sum()) for k in keys))
        else:
            ref_norm = math.sqrt(sum(norm_of[k] ** 2 for k in keys))
        how = "max|Δ|/max|g|" if is_full else "L2 norm per tensor"
        ok = worst[0] <= 1.0
        rows.append(ParityRow(name, f"grads.{ph}.{top} ({how}; {len(keys)} tensors)", got_norm, ref_norm, worst[2],
                              worst[3], bool(ok), f"nearest its tolerance: {worst[1]}; largest: {largest[1]} "
                              f"{largest[0]:.2e}; {strict}/{len(keys)} within {GRAD_RTOL:g}; MMPose fp32 vs fp64 "
                              f"(module L2): {'-' if theirs is None else format(theirs, '.1e')}"))
    return rows


def _rtmo_trainmode_rows(name, model, x, gts, gts64, assigner, phase_w, ref_loss) -> List[ParityRow]:
    """``trainmode.{phase}.*``: the same step with the whole model in train() (BatchNorm batch statistics, on a
    copy); tolerance max(LOSS_RTOL, NOISE_MARGIN x the fp32 noise)."""
    import copy

    from posekit.losses.rtmo import RTMOCriterion

    phases = sorted({k.split(".")[1] for k in ref_loss if k.startswith("trainmode.")})
    if not phases:
        return []
    m32 = copy.deepcopy(model).train()
    m64 = copy.deepcopy(model).double().train()
    _stochastic_to_eval(m32)
    _stochastic_to_eval(m64)
    rows = []
    for ph in phases:
        if ph not in phase_w:
            continue
        w = phase_w[ph]
        _, out, _ = _rtmo_run(m32, x, gts, RTMOCriterion(m32.head, assigner), w, backward=False)
        _, out64, _ = _rtmo_run(m64, x.double(), gts64, RTMOCriterion(m64.head, assigner), w, backward=False)
        for k in sorted(k for k in ref_loss if k.startswith(f"trainmode.{ph}.")):
            term = k[len(f"trainmode.{ph}."):]
            got, ref = _weighted(out, term, w), float(ref_loss[k])
            if got is None:
                rows.append(ParityRow(name, k, None, ref, None, None, None, "not checked (no posekit counterpart)"))
                continue
            if term == "num_samples":
                rows.append(ParityRow(name, k, got, ref, abs(got - ref), 0.0, got == ref, "exact"))
                continue
            noise = _rel(got, _weighted(out64, term, w))
            tol = _noise_tol(LOSS_RTOL, noise, None)
            d = _rel(got, ref)
            rows.append(ParityRow(name, k, got, ref, d, tol, bool(d <= tol), f"fp32 vs fp64: posekit {noise:.1e}"))
    return rows


def _is_rtmo(meta: Mapping, train_dir: Path) -> bool:
    kind = str(meta.get("kind", "")).lower()
    return kind == "rtmo" or (kind != "topdown" and "rtmo" in train_dir.name.lower())


def check_reference(root, forward_root=None, names: Optional[Iterable[str]] = None,
                    trainmode: bool = True) -> List[ParityRow]:
    """Every model folder (a folder with ``meta.json``) under ``root``, in name order; ``names`` restricts them.

    Top-down folders (``meta.kind == "topdown"``) are checked with :func:`check_topdown_folder`, RTMO folders with
    :func:`check_rtmo_folder`. A folder of another kind gives one failing row."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"reference folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / "meta.json").is_file())
    if names is not None:
        wanted = set(names)
        unknown = wanted - {p.name for p in folders}
        if unknown:
            raise ValueError(f"no model folder(s) {sorted(unknown)} in {root} (has {[p.name for p in folders]})")
        folders = [p for p in folders if p.name in wanted]
    if not folders:
        raise FileNotFoundError(f"no model folders (sub-folders with meta.json) in {root}")
    rows: List[ParityRow] = []
    for d in folders:
        meta = _load_json(d / "meta.json")
        if _is_rtmo(meta, d):
            rows += check_rtmo_folder(d, forward_folder_for(d, forward_root), trainmode=trainmode)
        elif str(meta.get("kind", "topdown")).lower() == "topdown":
            rows += check_topdown_folder(d, forward_folder_for(d, forward_root), trainmode=trainmode)
        else:
            rows.append(ParityRow(d.name, "all", None, None, None, None, False,
                                  f"unknown reference kind {meta.get('kind')!r}"))
    return rows


def all_passed(rows: Iterable[ParityRow]) -> bool:
    """True when no checked row failed (rows that are not checked do not count)."""
    return all(r.passed is not False for r in rows)


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    return f"{v:.6g}" if 1e-3 <= abs(v) < 1e6 else f"{v:.3e}"


def format_rows(rows: Iterable[ParityRow]) -> str:
    """A plain-text table: model, term, posekit, MMPose, max difference, tolerance, status."""
    head = ("model", "term", "posekit", "MMPose", "max diff", "tolerance", "status")
    body = [(r.model, r.term, _fmt(r.posekit), _fmt(r.mmpose), _fmt(r.max_diff), _fmt(r.tolerance),
             r.status + (f"  ({r.note})" if r.note and r.passed is not None and r.note not in ("exact", "absolute")
                         else "")) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)
