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

:func:`check_reference` runs every folder of a reference root. RTMO folders are listed with their MMPose loss
values as *not checked* (this checker does not implement RTMO's assignment and losses yet).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional

import numpy as np
import torch

__all__ = ["ParityRow", "check_topdown_folder", "official_preset", "check_reference", "forward_folder_for",
           "format_rows", "all_passed", "TARGET_ATOL", "LOSS_RTOL", "GRAD_RTOL", "RTMO_NOT_CHECKED"]

#: heatmaps / SimCC labels: absolute difference (keypoint weights must be equal)
TARGET_ATOL = 1e-6
#: loss terms: relative difference
LOSS_RTOL = 1e-5
#: gradients: max |difference| of a tensor relative to the largest |gradient| of that tensor
GRAD_RTOL = 1e-4
RTMO_NOT_CHECKED = "not checked (RTMO: not implemented in this checker yet)"
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
    fwd = Path(forward_dir) if forward_dir is not None else forward_folder_for(train_dir)
    meta_path = train_dir / "meta.json"
    meta = _load_json(meta_path)
    name = str(meta.get("name", train_dir.name))
    fmeta = _load_json(fwd / "meta.json")
    state = _load_pt(fwd / "state_dict.pt")
    batch = _load_pt(train_dir / "batch.pt")
    targets = _load_pt(train_dir / "targets.pt")
    ref_loss = _load_pt(train_dir / "loss.pt")
    ref_grads = _load_pt(train_dir / "grads.pt")
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


def _rtmo_rows(train_dir: Path, meta: Mapping) -> List[ParityRow]:
    name = str(meta.get("name", train_dir.name))
    loss = _load_pt(train_dir / "loss.pt")
    rows = [ParityRow(name, k, None, float(v), None, None, None, RTMO_NOT_CHECKED)
            for k, v in loss.items() if ("loss" in k or k.endswith("total")) and not k.startswith("trainmode.")]
    return rows or [ParityRow(name, "all", None, None, None, None, None, RTMO_NOT_CHECKED)]


def _is_rtmo(meta: Mapping, train_dir: Path) -> bool:
    kind = str(meta.get("kind", "")).lower()
    return kind == "rtmo" or (kind != "topdown" and "rtmo" in train_dir.name.lower())


def check_reference(root, forward_root=None, names: Optional[Iterable[str]] = None,
                    trainmode: bool = True) -> List[ParityRow]:
    """Every model folder (a folder with ``meta.json``) under ``root``, in name order; ``names`` restricts them.

    Top-down folders (``meta.kind == "topdown"``) are checked with :func:`check_topdown_folder`; RTMO folders are
    listed as not checked. A folder of another kind gives one failing row."""
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
            rows += _rtmo_rows(d, meta)
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
