"""RTMO in PyTorch: parity with MMPose's own outputs (../shared/reference/mmpose-tiny/rtmo), strict loading
of the official key layout, presets, decoding and NMS."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from posekit.models.heads.rtmo import box_iou_matrix, nms_xyxy
from posekit.models.rtmo import (
    RTMO_PRESETS,
    RTMOConfig,
    build_rtmo,
    build_rtmo_from_mmpose_meta,
    extract_state_dict,
    load_mmpose_rtmo_checkpoint,
    rtmo_config_from_mmpose,
)

REF = ("reference", "mmpose-tiny", "rtmo")
LEVELS = (16, 32)
HEAD_KEYS = [("cls_scores", "cls_score"), ("bbox_preds", "bbox_pred"), ("kpt_vis", "kpt_vis"),
             ("pose_feats", "pose_feat"), ("kpt_offsets", "kpt_offset")]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def ref():
    meta = json.loads(shared_path(*REF, "meta.json").read_text())
    sd = torch.load(shared_path(*REF, "state_dict.pt"), weights_only=True)
    x = torch.load(shared_path(*REF, "input.pt"), weights_only=True)
    out = torch.load(shared_path(*REF, "outputs.pt"), weights_only=True)
    model = build_rtmo_from_mmpose_meta(meta).eval()
    model.load_mmpose_checkpoint(sd)  # strict
    with torch.no_grad():
        raw = model(x, return_features=True, with_kpt_offsets=True)
    return dict(meta=meta, sd=sd, x=x, out=out, model=model, raw=raw)


def _ref_raw(out):
    """MMPose's own raw head tensors, in posekit's raw-dict layout."""
    return {k: [out[f"head.{n}.s{s}"] for s in LEVELS] for k, n in HEAD_KEYS}


def _match_by_box(boxes, ref_boxes):
    d = np.abs(boxes[:, None, :] - ref_boxes[None]).max(-1)
    j = d.argmin(1)
    assert len(set(j.tolist())) == len(j), "instances do not match one-to-one by box"
    return j, d[np.arange(len(j)), j]


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
def test_state_dict_keys_and_shapes_equal_official(ref):
    own = ref["model"].state_dict()
    assert set(own) == set(ref["sd"])
    assert len(own) == ref["meta"]["state_dict_num_keys"] == 514
    for k, v in ref["sd"].items():
        assert tuple(own[k].shape) == tuple(v.shape), k
        assert torch.equal(own[k], v), k  # loaded values, constant buffers included (dim_t, bins, sigmas)
    # the constant buffers we compute ourselves equal the checkpoint's
    fresh = build_rtmo_from_mmpose_meta(ref["meta"]).state_dict()
    for k in ("neck.sincos_pos_enc.dim_t", "head.dcc.spe.dim_t", "head.dcc.x_bins", "head.dcc.y_bins",
              "head.loss_oks.sigmas"):
        torch.testing.assert_close(fresh[k], ref["sd"][k], rtol=1e-6, atol=1e-7)


def test_checkpoint_wrappers_and_strictness(ref):
    sd = ref["sd"]
    m = build_rtmo_from_mmpose_meta(ref["meta"])
    # released layout {"state_dict": ...}, training layout with EMA weights, plain dict: all the same tensors
    ema = {"module." + k: v for k, v in sd.items()}
    ema["steps"] = torch.tensor(5)
    for ck in ({"state_dict": sd, "meta": {}}, {"state_dict": {}, "ema_state_dict": ema}, dict(sd)):
        got = extract_state_dict(ck)
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    load_mmpose_rtmo_checkpoint(m, {"state_dict": sd})
    missing = {k: v for k, v in sd.items() if k != "head.dcc.pos_enc"}
    with pytest.raises(RuntimeError, match="head.dcc.pos_enc"):
        load_mmpose_rtmo_checkpoint(m, missing)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with torch.device("meta"):
            big = build_rtmo("rtmo-s")
        load_mmpose_rtmo_checkpoint(big, sd)
    with pytest.raises(FileNotFoundError):
        load_mmpose_rtmo_checkpoint(m, "/nonexistent/rtmo.pth")


# ---------------------------------------------------------------------------------------------------------
# raw parity
# ---------------------------------------------------------------------------------------------------------
def test_raw_outputs_match_mmpose(ref):
    raw, out = ref["raw"], ref["out"]
    errs = {}
    for i in range(3):
        errs[f"backbone.out{i}"] = _rel(raw["backbone"][i], out[f"backbone.out{i}"])
    errs["neck.out0.s16"] = _rel(raw["neck"][0], out["neck.out0.s16"])
    errs["neck.out1.s32"] = _rel(raw["neck"][1], out["neck.out1.s32"])
    for li, s in enumerate(LEVELS):
        for k, n in HEAD_KEYS:
            a, b = raw[k][li], out[f"head.{n}.s{s}"]
            assert a.shape == b.shape, (k, s)
            errs[f"head.{n}.s{s}"] = _rel(a, b)
    bad = {k: v for k, v in errs.items() if not v <= 1e-4}
    assert not bad, bad
    assert len(errs) == 15


def test_eval_forward_omits_training_branch(ref):
    with torch.no_grad():
        raw = ref["model"](ref["x"])
    assert set(raw) == {"cls_scores", "bbox_preds", "kpt_vis", "pose_feats"}
    assert _rel(raw["pose_feats"][1], ref["out"]["head.pose_feat.s32"]) <= 1e-4


# ---------------------------------------------------------------------------------------------------------
# decoding parity
# ---------------------------------------------------------------------------------------------------------
def test_dense_decode_matches_mmpose_on_its_raw_tensors(ref):
    out = ref["out"]
    dn = ref["model"].head.dense(_ref_raw(out))
    torch.testing.assert_close(dn["priors"], out["dense.priors"], rtol=0, atol=0)
    torch.testing.assert_close(dn["prior_strides"], out["dense.prior_strides"], rtol=0, atol=0)
    assert float((dn["scores"] - out["dense.scores"]).abs().max()) <= 1e-6
    assert float((dn["keypoint_scores"] - out["dense.keypoint_scores"]).abs().max()) <= 1e-6
    assert float((dn["bboxes"] - out["dense.bboxes"]).abs().max()) <= 1e-3
    assert float((dn["kpt_reg_decoded"] - out["dense.kpt_reg_decoded"]).abs().max()) <= 1e-3
    # DCC keypoints of all 500 priors (every box, no filtering)
    assert float((dn["keypoints"] - out["dense.keypoints"]).abs().max()) <= 0.01


@pytest.mark.parametrize("tag,score_thr,nms_thr", [("predict", 0.1, 0.65), ("predict_strict", 0.55, 0.05)])
def test_predict_matches_mmpose_on_its_raw_tensors(ref, tag, score_thr, nms_thr):
    """Score filter + NMS + DCC + clamping, fed with MMPose's raw head tensors: <= 0.01 px."""
    out = ref["out"]
    res = ref["model"].decode(_ref_raw(out), score_thr=score_thr, nms_thr=nms_thr)
    assert len(res) == 1
    r = res[0]
    rb = out[f"{tag}.img0.bboxes"].numpy()
    assert r["boxes"].shape == rb.shape  # 499 / 72 instances: same filtering and suppression
    j, dbox = _match_by_box(r["boxes"], rb)
    assert dbox.max() <= 1e-3
    assert np.abs(r["keypoints"] - out[f"{tag}.img0.keypoints"].numpy()[j]).max() <= 0.01
    assert np.abs(r["scores"] - out[f"{tag}.img0.bbox_scores"].numpy()[j]).max() <= 1e-6
    assert np.abs(r["keypoint_scores"] - out[f"{tag}.img0.keypoint_scores"].numpy()[j]).max() <= 1e-6
    assert np.all(np.diff(r["scores"]) <= 0)
    assert r["boxes"].min() >= 0 and r["boxes"].max() <= 320


def test_predict_threshold_only_and_empty(ref):
    m, raw = ref["model"], _ref_raw(ref["out"])
    # nms disabled: every prior above the threshold survives (MMPose: 93 above 0.55)
    r = m.decode(raw, score_thr=0.55, nms_thr=1.0)[0]
    assert r["boxes"].shape == (93, 4)
    assert int((ref["out"]["dense.scores"] > 0.55).sum()) == 93
    e = m.decode(raw, score_thr=1.0)[0]
    assert e["boxes"].shape == (0, 4) and e["keypoints"].shape == (0, 17, 2)
    assert e["scores"].shape == (0,) and e["keypoint_scores"].shape == (0, 17)


@pytest.mark.parametrize("tag,score_thr,nms_thr", [("predict", 0.1, 0.65), ("predict_strict", 0.55, 0.05)])
def test_predict_end_to_end(ref, tag, score_thr, nms_thr):
    """From input.pt through posekit's own network. Raw tensors agree to ~3e-6 relative; the DCC softmax of
    this random-weight model (logits up to ~100) amplifies that float noise on a few ill-conditioned
    keypoints, so the bound is: 99 % of keypoints within 0.01 px, all within 1 px (see the next test)."""
    out = ref["out"]
    r = ref["model"].decode(ref["raw"], score_thr=score_thr, nms_thr=nms_thr)[0]
    rb = out[f"{tag}.img0.bboxes"].numpy()
    assert r["boxes"].shape == rb.shape
    j, dbox = _match_by_box(r["boxes"], rb)
    assert dbox.max() <= 1e-2
    err = np.abs(r["keypoints"] - out[f"{tag}.img0.keypoints"].numpy()[j]).max(-1)
    assert np.quantile(err, 0.99) <= 0.01
    assert np.median(err) <= 1e-3
    assert err.max() <= 1.0
    assert np.abs(r["scores"] - out[f"{tag}.img0.bbox_scores"].numpy()[j]).max() <= 1e-5


def test_end_to_end_keypoints_are_float32_ill_conditioned(ref):
    """Why the end-to-end bound is on 99 % of keypoints: perturbing input.pt by one float32 rounding step
    (x * (1 + 1e-7 N(0, 1))) moves posekit's *own* keypoints by up to ~0.6 px (measured 0.60 px max, q99 0.006 px)
    on this random-weight model, more than they differ from MMPose's (measured 0.19-0.52 px max). No float32
    implementation can meet 0.01 px on every keypoint of it; the raw tensors and the decode are exact."""
    m, x = ref["model"], ref["x"]
    torch.manual_seed(0)
    with torch.no_grad():
        a = m.decode(m(x), score_thr=0.1, nms_thr=0.65)[0]
        b = m.decode(m(x * (1 + 1e-7 * torch.randn_like(x))), score_thr=0.1, nms_thr=0.65)[0]
    j, dbox = _match_by_box(b["boxes"], a["boxes"])
    self_err = np.abs(b["keypoints"] - a["keypoints"][j]).max(-1)
    assert self_err.max() > 0.1  # a 1-ulp input change moves some keypoints by far more than 0.01 px
    assert np.quantile(self_err, 0.99) <= 0.02 and np.median(self_err) <= 1e-3  # ... but only a few


def test_batch_decoding_is_per_image(ref):
    m, x = ref["model"], ref["x"]
    x2 = torch.cat([x, x.flip(-1)], 0)
    with torch.no_grad():
        both = m.decode(m(x2))
        single = m.decode(m(x.flip(-1)))
    assert len(both) == 2
    assert both[0]["boxes"].shape == (499, 4)
    j, _ = _match_by_box(both[0]["boxes"], ref["out"]["predict.img0.bboxes"].numpy())
    assert np.quantile(np.abs(both[0]["keypoints"] - ref["out"]["predict.img0.keypoints"].numpy()[j]), 0.99) <= 0.01
    j, d = _match_by_box(both[1]["boxes"], single[0]["boxes"])
    assert d.max() <= 1e-3
    assert np.quantile(np.abs(both[1]["keypoints"] - single[0]["keypoints"][j]), 0.99) <= 0.01


# ---------------------------------------------------------------------------------------------------------
# NMS
# ---------------------------------------------------------------------------------------------------------
def _nms_bruteforce(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(box_iou_matrix(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


def test_nms_matches_bruteforce():
    rng = np.random.default_rng(0)
    for thr in (0.05, 0.3, 0.65):
        xy = rng.uniform(0, 100, (60, 2))
        wh = rng.uniform(5, 40, (60, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = rng.permutation(60).astype(np.float32) / 60
        keep = nms_xyxy(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
        assert keep == _nms_bruteforce(boxes, scores, thr)
        assert 0 < len(keep) < 60
    b = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=torch.float32)
    assert nms_xyxy(b, torch.tensor([0.5, 0.9, 0.1]), 0.65).tolist() == [1, 2]  # IoU 9/11 > 0.65
    assert nms_xyxy(b, torch.tensor([0.5, 0.9, 0.1]), 0.85).tolist() == [1, 0, 2]
    assert nms_xyxy(b[:0], torch.zeros(0), 0.5).numel() == 0


# ---------------------------------------------------------------------------------------------------------
# presets, config, errors
# ---------------------------------------------------------------------------------------------------------
# (stem conv, neck input_proj.2, pose-branch grouped conv, dcc pose_to_kpts, #state keys) from the official configs
_PRESET_SHAPES = {
    "rtmo-t": ((24, 12, 3, 3), (256, 384, 1, 1), (104, 13, 3, 3), (2176, 192), 514, (416, 416)),
    "rtmo-s": ((32, 12, 3, 3), (256, 512, 1, 1), (144, 18, 3, 3), (2176, 256), 514, (640, 640)),
    "rtmo-m": ((48, 12, 3, 3), (256, 768, 1, 1), (216, 27, 3, 3), (2176, 384), 658, (640, 640)),
    "rtmo-l": ((64, 12, 3, 3), (256, 1024, 1, 1), (288, 36, 3, 3), (2176, 512), 778, (640, 640)),
}


@pytest.mark.parametrize("name", sorted(_PRESET_SHAPES))
def test_presets_official_sizes(name):
    with torch.device("meta"):
        m = build_rtmo(name)
    sd = m.state_dict()
    stem, proj, grp, p2k, nkeys, size = _PRESET_SHAPES[name]
    assert tuple(sd["backbone.stem.conv.conv.weight"].shape) == stem
    assert tuple(sd["neck.input_proj.2.conv.weight"].shape) == proj
    assert tuple(sd["head.head_module.conv_pose.0.1.conv.weight"].shape) == grp
    assert tuple(sd["head.dcc.pose_to_kpts.0.weight"].shape) == p2k
    assert tuple(sd["head.dcc.x_bins"].shape) == (192,) and tuple(sd["head.dcc.y_bins"].shape) == (256,)
    assert len(sd) == nkeys
    cfg = RTMO_PRESETS[name]
    assert cfg.input_size == size
    assert cfg.url.startswith("https://download.openmmlab.com/mmpose/v1/projects/rtmo/" + name)
    assert cfg.url.endswith(".pth")


def test_small_preset_same_layout_as_reference(ref):
    """The reference is rtmo-s with reduced widths: same keys as the rtmo-s preset."""
    with torch.device("meta"):
        m = build_rtmo("rtmo-s")
    assert set(m.state_dict()) == set(ref["sd"])


def test_config_errors_and_overrides(ref):
    with pytest.raises(KeyError, match="rtmo-x"):
        build_rtmo("rtmo-x")
    with pytest.raises(ValueError, match="not_a_field"):
        build_rtmo("rtmo-s", not_a_field=1)
    with pytest.raises(ValueError, match="neck_out_channels"):
        build_rtmo("rtmo-s", neck_out_channels=192)  # the head splits its input in two halves of 128
    with torch.device("meta"):
        m = build_rtmo("rtmo-t", num_keypoints=14)
    assert m.state_dict()["head.head_module.out_kpt_vis.0.weight"].shape[0] == 14
    bad = json.loads(json.dumps(ref["meta"]["model_cfg"]))
    bad["backbone"]["act_cfg"]["type"] = "ReLU"
    with pytest.raises(ValueError, match="backbone.act_cfg.type"):
        rtmo_config_from_mmpose(bad)
    cfg = rtmo_config_from_mmpose(ref["meta"]["model_cfg"])
    assert isinstance(cfg, RTMOConfig) and cfg.input_size == (320, 320) and cfg.num_bins == (24, 32)
    with pytest.raises(ValueError, match="multiples of 32"):
        ref["model"](torch.zeros(1, 3, 100, 96))


def test_training_mode_gradients(ref):
    """Training branch: kpt_offsets present, DCC forward_train gives probabilities and sigmas, grads flow."""
    m = build_rtmo_from_mmpose_meta(ref["meta"])
    m.load_mmpose_checkpoint(ref["sd"])
    m.train()
    x = ref["x"][:, :, :128, :128].repeat(2, 1, 1, 1)
    raw = m(x)
    assert len(raw["kpt_offsets"]) == 2 and raw["kpt_offsets"][0].shape == (2, 34, 8, 8)
    pose = m.head.flatten_levels(raw["pose_feats"])[0][:5]
    priors, strides = m.head.priors_for(raw)
    cs = torch.cat([priors[:5], torch.full((5, 2), 50.0)], 1)
    kpts, (px, py), sig = m.head.dcc.forward_train(pose, cs, priors[:5])
    assert kpts.shape == (5, 17, 2) and px.shape == (5, 17, 24) and py.shape == (5, 17, 32)
    torch.testing.assert_close(px.detach().sum(-1), torch.ones(5, 17), rtol=0, atol=1e-5)
    scale = m.head.dcc.sigma_fc[2].scale.detach().item()  # sigma = sigmoid(.) * scale
    assert 0 < sig.detach().min().item() and sig.detach().max().item() < scale
    # keypoints lie inside the expanded box (a convex combination of the bins)
    assert (kpts.detach()[..., 0] - priors[:5, None, 0]).abs().max().item() <= 25 + 1e-3
    (kpts.sum() + raw["cls_scores"][0].sum() + sig.sum()).backward()
    assert m.backbone.stem.conv.conv.weight.grad is not None
    assert m.head.dcc.gau.uv.weight.grad.abs().sum() > 0
