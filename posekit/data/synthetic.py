"""Synthetic multi-person keypoint data: articulated figures drawn over textured backgrounds.

It exists so that training tests (bottom-up, one-stage, top-down) can run in minutes on 2 CPU cores with a
COCO-format dataset whose ground truth is exact. See ``docs/synthetic.md``.

The figure model is a small 3-D kinematic chain measured in head heights ``H`` (a standing adult is about
``7.6 H`` tall, a child ``5.5 H``): pelvis -> hips -> knees -> ankles (+ feet), pelvis -> torso -> shoulders ->
elbows -> wrists (+ hands), neck -> head (an ellipsoid with eyes, nose, ears and hair). Joint angles come from
pose templates (standing, walking, running, arms up, waving, sitting, squatting, kicking, free) with noise, in
anatomical ranges (elbows and knees bend one way only), optionally mirrored left/right. The body is turned by a
yaw angle (front, back and side views), rolled in the image plane, projected orthographically and painted far to
near. While painting, an integer map records for every pixel which person and which body part painted it; the
visibility flags and segmentations are read off that map:

- ``v = 0``: the keypoint lies outside the image (``x, y`` written as 0, like COCO);
- ``v = 2``: the keypoint's pixel shows one of the keypoint's own body parts (e.g. the elbow: upper arm or
  forearm; the hip: torso or thigh), and, for face keypoints, that face point turns towards the camera;
- ``v = 1``: inside the image but covered: by another person, a foreground object, or another part of the same
  body (a hand over the hip, the far arm behind the torso, the eyes of a head seen from behind).

Coordinates: keypoints use pixel centres at integer coordinates (the library convention; the pixel of keypoint
``(x, y)`` is ``(floor(y + 0.5), floor(x + 0.5))``); segmentation polygons are in pycocotools' mask frame so that
``pycocotools.mask`` decodes them back to exactly the painted pixels (holes filled).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from posekit.schema import COCO17, KeypointSchema, get_schema

__all__ = ["render_image", "make_synthetic_dataset", "SUPPORTED_KEYPOINTS"]

# --------------------------------------------------------------------------- parts and keypoints
TORSO, HEAD, L_UARM, R_UARM, L_FARM, R_FARM, L_THIGH, R_THIGH, L_SHIN, R_SHIN = range(10)
PART_NAMES = ("torso", "head", "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm",
              "left_thigh", "right_thigh", "left_shin", "right_shin")
_PART_BITS = 4  # code map value = owner << 4 | part

# keypoint name -> (the figure's named point, the body parts that count as "its own")
_KEYPOINTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "nose": ("nose", (HEAD,)),
    "left_eye": ("left_eye", (HEAD,)),
    "right_eye": ("right_eye", (HEAD,)),
    "left_ear": ("left_ear", (HEAD,)),
    "right_ear": ("right_ear", (HEAD,)),
    "left_shoulder": ("left_shoulder", (TORSO, L_UARM)),
    "right_shoulder": ("right_shoulder", (TORSO, R_UARM)),
    "left_elbow": ("left_elbow", (L_UARM, L_FARM)),
    "right_elbow": ("right_elbow", (R_UARM, R_FARM)),
    "left_wrist": ("left_wrist", (L_FARM,)),
    "right_wrist": ("right_wrist", (R_FARM,)),
    "left_hip": ("left_hip", (TORSO, L_THIGH)),
    "right_hip": ("right_hip", (TORSO, R_THIGH)),
    "left_knee": ("left_knee", (L_THIGH, L_SHIN)),
    "right_knee": ("right_knee", (R_THIGH, R_SHIN)),
    "left_ankle": ("left_ankle", (L_SHIN,)),
    "right_ankle": ("right_ankle", (R_SHIN,)),
    "neck": ("neck", (TORSO, HEAD)),
    "thorax": ("neck", (TORSO, HEAD)),
    "upper_neck": ("upper_neck", (HEAD,)),
    "top_head": ("head_top", (HEAD,)),
    "head_top": ("head_top", (HEAD,)),
    "pelvis": ("pelvis", (TORSO,)),
}
#: keypoint names the generator can annotate (every built-in schema uses only these).
SUPPORTED_KEYPOINTS = tuple(_KEYPOINTS)
_FACE = {"nose", "left_eye", "right_eye", "left_ear", "right_ear"}

_OBJECT_OWNER = 0xFFFF  # owner id of foreground objects in the code map

# Face points on the head ellipsoid, in the head frame (X: person's left, Y: down, Z: forward; head heights).
_HEAD_AXES = np.array([0.36, 0.5, 0.45])
_FACE_POINTS = {
    "nose": np.array([0.0, 0.12, 0.47]),
    "left_eye": np.array([0.15, -0.02, 0.40]),
    "right_eye": np.array([-0.15, -0.02, 0.40]),
    "left_ear": np.array([0.355, 0.03, -0.02]),
    "right_ear": np.array([-0.355, 0.03, -0.02]),
}
# a face point is visible when its outward normal's component towards the camera exceeds this
_FACE_FACING_MIN = {"nose": 0.0, "left_eye": 0.08, "right_eye": 0.08, "left_ear": -0.3, "right_ear": -0.3}

_SKIN = np.array([[224, 233, 255], [189, 210, 241], [160, 190, 232], [128, 166, 212], [98, 134, 185],
                  [70, 105, 160], [50, 75, 120], [35, 52, 85]], np.float64)  # BGR, light to dark
_HAIR = np.array([[20, 20, 25], [30, 45, 70], [40, 80, 130], [120, 180, 220], [170, 170, 175],
                  [30, 60, 150]], np.float64)
_PANTS = np.array([[120, 70, 30], [40, 40, 40], [110, 160, 190], [90, 90, 90], [60, 40, 30], [30, 30, 110],
                   [150, 150, 150]], np.float64)


# --------------------------------------------------------------------------- small geometry helpers
def _rx(a: float) -> np.ndarray:
    """Rotation turning +Y (down) towards +Z (forward) by ``a`` radians."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    """Rotation about the vertical axis turning +Z (forward) towards +X by ``a`` radians (the yaw)."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    """Rotation turning +X towards +Y (clockwise in the image) by ``a`` radians."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _limb_frame(abduct: float, flex: float, side: float) -> tuple[np.ndarray, np.ndarray]:
    """A limb hanging from its joint, abducted sideways (outwards) then flexed forwards (radians): its direction
    and its front (the limb's own forward axis, orthogonal to the direction)."""
    rot = _rx(flex)
    d = rot @ np.array([side * math.sin(abduct), math.cos(abduct), 0.0])
    return d, rot @ np.array([0.0, 0.0, 1.0])


def _bend(d: np.ndarray, angle: float, towards: np.ndarray, twist: float = 0.0, side: float = 1.0) -> np.ndarray:
    """Distal segment direction: ``d`` bent by ``angle`` towards the unit vector ``towards`` (orthogonal to ``d``),
    after turning that bending direction about ``d`` by ``twist`` (positive = outwards for both sides)."""
    b0 = towards
    if twist:
        b0 = math.cos(twist) * b0 + side * math.sin(twist) * np.cross(d, b0)
    return math.cos(angle) * d + math.sin(angle) * b0


# --------------------------------------------------------------------------- poses
def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _sample_pose(rng: np.random.Generator) -> dict:
    """Joint angles in degrees: arm (abduct, flex, elbow, twist) and leg (abduct, flex, knee) per side, torso
    (lean, side, twist), head (yaw, pitch, roll), the template name and a preferred view."""
    templates = ("stand", "walk", "run", "arms_up", "wave", "sit", "squat", "kick", "free")
    probs = np.array([0.22, 0.16, 0.1, 0.08, 0.1, 0.08, 0.06, 0.05, 0.15])
    t = templates[int(rng.choice(len(templates), p=probs / probs.sum()))]
    arm = {s: [_u(rng, 5, 25), _u(rng, -15, 20), _u(rng, 0, 35), _u(rng, -20, 40)] for s in "LR"}
    leg = {s: [_u(rng, -3, 10), _u(rng, -8, 12), _u(rng, 0, 12)] for s in "LR"}
    lean = _u(rng, -8, 12)
    if t == "walk":
        a = _u(rng, 15, 40)
        arm["L"][1], arm["R"][1] = a, -_u(rng, 10, 35)
        arm["L"][2], arm["R"][2] = _u(rng, 15, 50), _u(rng, 5, 30)
        leg["L"][1], leg["R"][1] = -_u(rng, 10, 30), _u(rng, 10, 35)
        leg["L"][2], leg["R"][2] = _u(rng, 10, 45), _u(rng, 0, 15)
    elif t == "run":
        arm["L"][1], arm["R"][1] = _u(rng, 20, 70), -_u(rng, 10, 50)
        arm["L"][2], arm["R"][2] = _u(rng, 70, 120), _u(rng, 60, 110)
        leg["L"][1], leg["R"][1] = -_u(rng, 10, 35), _u(rng, 30, 75)
        leg["L"][2], leg["R"][2] = _u(rng, 40, 110), _u(rng, 40, 100)
        lean = _u(rng, 5, 20)
    elif t == "arms_up":
        for s in "LR":
            if rng.random() < 0.5:
                arm[s][:3] = [_u(rng, 110, 170), _u(rng, -10, 20), _u(rng, 0, 50)]
            else:
                arm[s][:3] = [_u(rng, 10, 40), _u(rng, 120, 175), _u(rng, 0, 40)]
    elif t == "wave":
        arm["L"] = [_u(rng, 60, 110), _u(rng, -10, 30), _u(rng, 60, 130), _u(rng, 60, 90)]
    elif t == "sit":
        for s in "LR":
            leg[s] = [_u(rng, -5, 20), _u(rng, 70, 105), _u(rng, 70, 110)]
            arm[s][1], arm[s][2] = _u(rng, 0, 40), _u(rng, 30, 100)
        lean = _u(rng, -10, 15)
    elif t == "squat":
        for s in "LR":
            leg[s] = [_u(rng, 10, 35), _u(rng, 95, 130), _u(rng, 110, 145)]
            arm[s][1], arm[s][2] = _u(rng, 20, 80), _u(rng, 20, 90)
        lean = _u(rng, 15, 40)
    elif t == "kick":
        leg["L"] = [_u(rng, 0, 30), _u(rng, 40, 95), _u(rng, 0, 60)]
        arm["R"][:2] = [_u(rng, 30, 80), _u(rng, -10, 40)]
    elif t == "free":
        for s in "LR":
            arm[s] = [_u(rng, 0, 170), _u(rng, -45, 170), _u(rng, 0, 145), _u(rng, -60, 90)]
            leg[s] = [_u(rng, -10, 45), _u(rng, -30, 115), _u(rng, 0, 135)]
        lean = _u(rng, -15, 30)
    if rng.random() < 0.5:  # mirrored pose: swap the sides of the asymmetric templates
        arm["L"], arm["R"] = arm["R"], arm["L"]
        leg["L"], leg["R"] = leg["R"], leg["L"]
    return {
        "template": t,
        "arm": arm,
        "leg": leg,
        "torso": (lean, _u(rng, -10, 10), _u(rng, -20, 20)),
        "head": (_u(rng, -50, 50), _u(rng, -20, 25), _u(rng, -15, 15)),
    }


def _sample_view(rng: np.random.Generator, template: str, views: str = "all") -> tuple[float, float]:
    """(yaw, roll) in degrees. ``views="all"``: mostly frontal, sometimes from behind or the side; rarely far from
    upright. ``views="front"``: facing the camera (yaw ~ N(0, 15) clipped to +-40) and upright (roll ~ N(0, 5))."""
    if views == "front":
        return float(np.clip(rng.normal(0, 15), -40.0, 40.0)), float(rng.normal(0, 5))
    r = rng.random()
    side_p = 0.45 if template in ("walk", "run", "kick") else 0.22
    if r < side_p:
        yaw = float(rng.choice([-90.0, 90.0])) + rng.normal(0, 20)
    elif r < side_p + 0.15:
        yaw = 180.0 + rng.normal(0, 25)
    else:
        yaw = rng.normal(0, 28)
    roll = rng.normal(0, 5) if rng.random() > 0.04 else _u(rng, -180, 180)
    return float(yaw), float(roll)


# --------------------------------------------------------------------------- figure construction
class _Figure:
    """One articulated figure, projected: named points (image px), z (towards the viewer, px) and parts."""

    def __init__(self, rng: np.random.Generator, head_px: float, detail: bool = True, views: str = "all"):
        self.head_px = head_px
        pose = _sample_pose(rng)
        yaw, roll = _sample_view(rng, pose["template"], views)
        child = rng.random() < 0.12
        ls = (0.72 if child else 1.0) * _u(rng, 0.93, 1.07)  # body length scale (head heights)
        ws = _u(rng, 0.85, 1.25) * (0.85 if child else 1.0)  # build (widths)
        rad = math.radians
        self.R = _rz(rad(roll)) @ _ry(rad(yaw))  # body frame -> camera frame
        T = _rz(rad(pose["torso"][1])) @ _rx(-rad(pose["torso"][0])) @ _ry(rad(pose["torso"][2]))
        hp = pose["head"]
        Hm = T @ _ry(rad(hp[0])) @ _rx(rad(hp[1])) @ _rz(rad(hp[2]))
        torso_len = 2.45 * ls
        sh_w, hip_w = 0.85 * ws * (ls ** 0.5), 0.55 * ws * (ls ** 0.5)

        P: dict[str, np.ndarray] = {}
        P["pelvis"] = np.zeros(3)
        P["neck"] = T @ np.array([0.0, -torso_len, 0.0])
        for s, side in (("left", 1.0), ("right", -1.0)):
            sd = side
            P[f"{s}_shoulder"] = T @ np.array([sd * sh_w, -torso_len + 0.12, 0.0])
            P[f"{s}_hip"] = np.array([sd * hip_w, 0.0, 0.0])
            a = pose["arm"][s[0].upper()]
            d_local, front = _limb_frame(rad(a[0]), rad(a[1]), sd)
            f_local = _bend(d_local, rad(a[2]), front, rad(a[3]), sd)  # elbows bend to the arm's front
            P[f"{s}_elbow"] = P[f"{s}_shoulder"] + 1.4 * ls * (T @ d_local)
            P[f"{s}_wrist"] = P[f"{s}_elbow"] + 1.15 * ls * (T @ f_local)
            P[f"{s}_hand"] = P[f"{s}_wrist"] + 0.3 * ls * (T @ f_local)
            g = pose["leg"][s[0].upper()]
            d, front = _limb_frame(rad(g[0]), rad(g[1]), sd)
            k = rad(g[2])
            c = _bend(d, k, -front)  # knees bend to the back of the thigh
            P[f"{s}_knee"] = P[f"{s}_hip"] + 1.85 * ls * d
            P[f"{s}_ankle"] = P[f"{s}_knee"] + 1.8 * ls * c
            foot = _bend(math.sin(k) * d + math.cos(k) * front, _u(rng, -0.3, 0.3), c)
            P[f"{s}_toe"] = P[f"{s}_ankle"] + 0.55 * ls ** 0.5 * foot + 0.08 * c
        P["upper_neck"] = P["neck"] + T @ np.array([0.0, -0.3, 0.0])
        head_c = P["upper_neck"] + Hm @ np.array([0.0, -0.42, 0.04])
        P["head_c"] = head_c
        P["head_top"] = head_c + Hm @ np.array([0.0, -0.5, 0.0])
        for name, q in _FACE_POINTS.items():
            P[name] = head_c + Hm @ q

        # camera frame, in pixels (pelvis at the origin; the caller translates)
        s = head_px
        self.pts = {k: s * (self.R @ v) for k, v in P.items()}
        Hc = self.R @ Hm  # head frame -> camera
        self.face_facing = {}
        for name, q in _FACE_POINTS.items():
            n = _unit(Hc @ (q / _HEAD_AXES ** 2))
            self.face_facing[name] = bool(n[2] > _FACE_FACING_MIN[name])
        self.head_forward_z = float(Hc[2, 2])

        # head ellipsoid -> projected ellipse (x^T Q x = 1) via the Schur complement
        A = Hc @ np.diag(1.0 / (s * _HEAD_AXES) ** 2) @ Hc.T
        Q = A[:2, :2] - np.outer(A[:2, 2], A[2, :2]) / A[2, 2]
        self.head_ellipse = Q
        hair_Q = None
        if detail:
            hair_axes = _HEAD_AXES * np.array([1.04, 1.0, 1.02])
            Ah = Hc @ np.diag(1.0 / (s * hair_axes) ** 2) @ Hc.T
            hair_Q = Ah[:2, :2] - np.outer(Ah[:2, 2], Ah[2, :2]) / Ah[2, 2]
        self.hair_ellipse = hair_Q
        self.hair_center = s * (self.R @ (head_c + Hm @ np.array([0.0, -0.1, -0.09])))

        # torso: two convex solids (chest and pelvis) with elliptical cross-sections, joined at the waist
        ang = np.linspace(0, 2 * math.pi, 10, endpoint=False)
        ring = np.stack([np.cos(ang), np.sin(ang)], 1)

        def level(y, hw, dz, frame):
            return [frame @ np.array([hw * c, y, dz * si]) for c, si in ring]

        L = torso_len
        waist = level(-0.3 * L, 0.6 * ws * ls ** 0.5, 0.36 * ws, T)
        chest = (level(-L - 0.05, 0.45 * ws, 0.25 * ws, T) + level(-L + 0.22, sh_w + 0.1 * ws, 0.38 * ws, T)
                 + level(-0.68 * L, sh_w * 0.92, 0.44 * ws, T) + waist)
        pelvis = waist + level(0.08, hip_w + 0.33 * ws, 0.4 * ws, np.eye(3)) + \
            level(0.32, 0.45 * ws, 0.3 * ws, np.eye(3))
        # painted in this order: pelvis, then chest over it
        self.torso_hulls = [np.array([s * (self.R @ p) for p in pelvis])[:, :2],
                            np.array([s * (self.R @ p) for p in chest])[:, :2]]
        self.torso_z = float(s * (self.R @ (T @ np.array([0.0, -0.5 * torso_len, 0.0])))[2])

        # colours (BGR)
        skin = _SKIN[int(rng.integers(len(_SKIN)))] * _u(rng, 0.9, 1.08)
        shirt_hsv = np.array([[[rng.integers(0, 180), rng.integers(40, 255), rng.integers(50, 255)]]], np.uint8)
        shirt = cv2.cvtColor(shirt_hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)
        pants = _PANTS[int(rng.integers(len(_PANTS)))] * _u(rng, 0.8, 1.2) if rng.random() < 0.7 else \
            rng.uniform(20, 230, 3)
        shoes = rng.uniform(10, 90, 3) if rng.random() < 0.8 else rng.uniform(100, 250, 3)
        self.skin = np.clip(skin, 0, 255)
        self.hair = None if rng.random() < 0.08 else np.clip(_HAIR[int(rng.integers(len(_HAIR)))]
                                                              * _u(rng, 0.8, 1.2), 0, 255)
        sleeve = shirt if rng.random() < 0.6 else self.skin
        legwear = pants if rng.random() < 0.8 else self.skin

        # limbs: (part, name a, name b, radius a, radius b (head heights), colour, end cap (name, radius, colour))
        r = ws
        self.limbs = []
        for s_, L in (("left", True), ("right", False)):
            ua, fa, th, sh = (L_UARM, L_FARM, L_THIGH, L_SHIN) if L else (R_UARM, R_FARM, R_THIGH, R_SHIN)
            self.limbs += [
                (ua, f"{s_}_shoulder", f"{s_}_elbow", 0.21 * r, 0.16 * r, shirt, None),
                (fa, f"{s_}_elbow", f"{s_}_wrist", 0.15 * r, 0.11 * r, sleeve, (f"{s_}_hand", 0.15, self.skin)),
                (th, f"{s_}_hip", f"{s_}_knee", 0.32 * r, 0.22 * r, pants, None),
                (sh, f"{s_}_knee", f"{s_}_ankle", 0.21 * r, 0.13 * r, legwear, (f"{s_}_toe", 0.12, shoes)),
            ]
        self.torso_colors = [pants if rng.random() < 0.75 else shirt, shirt]
        self.neck_radius = 0.17 * r
        bias = {TORSO: 0.0, HEAD: 0.06, L_UARM: 0.03, R_UARM: 0.03, L_FARM: 0.04, R_FARM: 0.04,
                L_THIGH: -0.15, R_THIGH: -0.15, L_SHIN: -0.12, R_SHIN: -0.12}
        depth = {TORSO: self.torso_z, HEAD: float(self.pts["head_c"][2])}
        for part, a, b, *_ in self.limbs:
            depth[part] = 0.5 * float(self.pts[a][2] + self.pts[b][2])
        self.order = sorted(depth, key=lambda p: depth[p] + bias[p] * s)

    def translate(self, dx: float, dy: float) -> None:
        off = np.array([dx, dy, 0.0])
        for k in self.pts:
            self.pts[k] = self.pts[k] + off
        self.torso_hulls = [hh + off[:2] for hh in self.torso_hulls]
        self.hair_center = self.hair_center + off

    def bbox(self) -> np.ndarray:
        xy = np.concatenate([np.array([v[:2] for v in self.pts.values()])] + self.torso_hulls)
        m = 0.5 * self.head_px
        return np.array([xy[:, 0].min() - m, xy[:, 1].min() - m, xy[:, 0].max() + m, xy[:, 1].max() + m])


# --------------------------------------------------------------------------- painting
_SH = 4
_ONE = 1 << _SH


def _fx(p) -> tuple[int, int]:
    return int(round(p[0] * _ONE)), int(round(p[1] * _ONE))


def _capsule(dst, p0, p1, r0, r1, color) -> None:
    """A tapered segment with round ends (radii in px) from p0 to p1 (xy, px)."""
    r0, r1 = max(r0, 0.7), max(r1, 0.7)
    d = np.asarray(p1[:2], np.float64) - np.asarray(p0[:2], np.float64)
    n = float(np.hypot(d[0], d[1]))
    if n > 1e-6:
        nv = np.array([-d[1], d[0]]) / n
        quad = np.array([p0[:2] + r0 * nv, p1[:2] + r1 * nv, p1[:2] - r1 * nv, p0[:2] - r0 * nv])
        cv2.fillConvexPoly(dst, np.round(quad * _ONE).astype(np.int32), color, cv2.LINE_8, _SH)
    cv2.circle(dst, _fx(p0), int(round(r0 * _ONE)), color, -1, cv2.LINE_8, _SH)
    cv2.circle(dst, _fx(p1), int(round(r1 * _ONE)), color, -1, cv2.LINE_8, _SH)


def _ellipse(dst, center, Q, grow: float, color) -> None:
    """Filled ellipse ``x^T Q x = 1`` (2x2, px) around ``center``, semi-axes grown by ``grow`` px."""
    w, v = np.linalg.eigh(Q)
    ax = 1.0 / np.sqrt(np.maximum(w, 1e-12)) + grow
    ang = math.degrees(math.atan2(v[1, 0], v[0, 0]))
    axes = (int(round(max(ax[0], 0.6) * _ONE)), int(round(max(ax[1], 0.6) * _ONE)))
    cv2.ellipse(dst, _fx(center), axes, ang, 0, 360, color, -1, cv2.LINE_8, _SH)


def _col(c) -> tuple:
    return tuple(float(x) for x in np.clip(c, 0, 255))


def _paint_figure(img: np.ndarray, code: np.ndarray, owner: int, fig: _Figure, detail: bool = True) -> None:
    """Paint a figure far to near on ``img`` (BGR) and ``code`` (int32, ``owner << 4 | part``)."""
    s = fig.head_px
    ow = max(0.6, 0.05 * s) if detail else 0.0  # dark outline width, px (part of the part in the code map)
    base = owner << _PART_BITS
    pts = fig.pts
    limbs = {lb[0]: lb for lb in fig.limbs}
    for part in fig.order:
        cv = base | part
        if part == TORSO:
            for hh, color in zip(fig.torso_hulls, fig.torso_colors):
                hull = cv2.convexHull(np.round(hh * _ONE).astype(np.int32))
                cv2.fillConvexPoly(code, hull, cv, cv2.LINE_8, _SH)
                cv2.fillConvexPoly(img, hull, _col(color * 0.55), cv2.LINE_8, _SH)
                if ow > 0:
                    inner = hh + ow * _unit_inward(hh)
                    hull_i = cv2.convexHull(np.round(inner * _ONE).astype(np.int32))
                    cv2.fillConvexPoly(img, hull_i, _col(color), cv2.LINE_8, _SH)
        elif part == HEAD:
            _paint_head(img, code, cv, fig, ow, detail)
        else:
            _, a, b, ra, rb, color, cap = limbs[part]
            pa, pb = pts[a], pts[b]
            ra, rb = ra * s, rb * s
            _capsule(code, pa, pb, ra + ow, rb + ow, cv)
            _capsule(img, pa, pb, ra + ow, rb + ow, _col(color * 0.55))
            if ow > 0:
                _capsule(img, pa, pb, ra, rb, _col(color))
            if cap is not None:
                cname, cr, ccol = cap
                _capsule(code, pb, pts[cname], cr * s + ow, cr * s * 0.9 + ow, cv)
                _capsule(img, pb, pts[cname], cr * s + ow, cr * s * 0.9 + ow, _col(ccol * 0.55))
                if ow > 0:
                    _capsule(img, pb, pts[cname], cr * s, cr * s * 0.9, _col(ccol))


def _unit_inward(poly: np.ndarray) -> np.ndarray:
    c = poly.mean(axis=0)
    d = c - poly
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)


def _paint_head(img, code, cv, fig: _Figure, ow: float, detail: bool) -> None:
    s = fig.head_px
    pts = fig.pts
    skin = fig.skin
    # neck
    _capsule(code, pts["neck"], pts["upper_neck"], fig.neck_radius * s + ow, fig.neck_radius * s + ow, cv)
    _capsule(img, pts["neck"], pts["upper_neck"], fig.neck_radius * s + ow, fig.neck_radius * s + ow,
             _col(skin * 0.55))
    _capsule(img, pts["neck"], pts["upper_neck"], fig.neck_radius * s, fig.neck_radius * s, _col(skin * 0.9))
    hc = pts["head_c"]
    _ellipse(code, hc, fig.head_ellipse, ow, cv)
    hair_front = fig.head_forward_z < -0.2  # seen from behind: hair over the face side
    if fig.hair is not None and fig.hair_ellipse is not None:
        _ellipse(code, fig.hair_center, fig.hair_ellipse, ow, cv)
    layers = [("skin", hc, fig.head_ellipse, skin)]
    if fig.hair is not None and fig.hair_ellipse is not None:
        hair = ("hair", fig.hair_center, fig.hair_ellipse, fig.hair)
        layers = [layers[0], hair] if hair_front else [hair, layers[0]]
    for _, c, Q, col in layers:
        _ellipse(img, c, Q, ow, _col(col * 0.55))
    for _, c, Q, col in layers:
        _ellipse(img, c, Q, 0.0, _col(col))
    if not detail:
        return
    r_feat = max(0.7, 0.06 * s)
    for name in ("left_ear", "right_ear"):
        if fig.face_facing[name]:
            cv2.circle(code, _fx(pts[name]), int(round(1.3 * r_feat * _ONE)), cv, -1, cv2.LINE_8, _SH)
            cv2.circle(img, _fx(pts[name]), int(round(1.3 * r_feat * _ONE)), _col(skin * 0.8), -1, cv2.LINE_8, _SH)
    if fig.face_facing["nose"]:
        cv2.circle(code, _fx(pts["nose"]), int(round(r_feat * _ONE)), cv, -1, cv2.LINE_8, _SH)
        cv2.circle(img, _fx(pts["nose"]), int(round(r_feat * _ONE)), _col(skin * 0.75), -1, cv2.LINE_8, _SH)
    for name in ("left_eye", "right_eye"):
        if fig.face_facing[name]:
            cv2.circle(img, _fx(pts[name]), int(round(max(0.6, 0.05 * s) * _ONE)), (25, 25, 30), -1,
                       cv2.LINE_8, _SH)


# --------------------------------------------------------------------------- backgrounds and objects
def _background(rng: np.random.Generator, w: int, h: int, plain: bool = False) -> np.ndarray:
    """A colour gradient with low-frequency variation; unless ``plain``, also stripes and distractor shapes."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * math.pi)
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :] * math.cos(ang)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None] * math.sin(ang)
    t = xs + ys
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0.astype(np.float32) + t[..., None] * (c1 - c0).astype(np.float32)
    g = int(rng.integers(3, 10))
    low = rng.normal(0, rng.uniform(8, 35), (g, g, 3)).astype(np.float32)
    img += cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    if plain:
        return np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:  # stripes / texture
        f = rng.uniform(4, 30)
        a2 = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img += (rng.uniform(8, 30) * np.sin((xx * math.cos(a2) + yy * math.sin(a2)) * (2 * math.pi / f)))[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    side = min(w, h)
    for _ in range(int(rng.integers(2, 12))):
        col = tuple(float(x) for x in rng.uniform(0, 255, 3))
        kind = rng.random()
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        size = float(rng.uniform(0.03, 0.4) * side)
        filled = -1 if rng.random() < 0.7 else max(1, int(side / 100))
        if kind < 0.3:
            cv2.rectangle(img, (int(cx - size), int(cy - size * rng.uniform(0.2, 1))),
                          (int(cx + size * rng.uniform(0.2, 1)), int(cy + size)), col, filled)
        elif kind < 0.55:
            cv2.ellipse(img, (int(cx), int(cy)), (int(size), int(size * rng.uniform(0.2, 1))),
                        float(rng.uniform(0, 180)), 0, 360, col, filled, cv2.LINE_AA)
        elif kind < 0.8:  # limb-like distractors: thick lines
            x2, y2 = cx + rng.normal(0, size), cy + rng.normal(0, size)
            cv2.line(img, (int(cx), int(cy)), (int(x2), int(y2)), col, max(1, int(size * 0.15)), cv2.LINE_AA)
        else:
            n = int(rng.integers(3, 7))
            poly = np.stack([cx + rng.normal(0, size, n), cy + rng.normal(0, size, n)], 1).astype(np.int32)
            cv2.fillPoly(img, [poly], col, cv2.LINE_AA)
    return img


def _paint_object(rng, img, code, w, h, near: np.ndarray | None) -> None:
    """A foreground occluder (pole, box, ball, bush, sign) near ``near`` (xy) or anywhere."""
    side = min(w, h)
    if near is not None:
        cx, cy = near + rng.normal(0, 0.05 * side, 2)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    col = rng.uniform(0, 255, 3)
    shade = _col(col * 0.6)
    kind = rng.random()
    val = _OBJECT_OWNER << _PART_BITS
    if kind < 0.3:  # pole (vertical or slanted)
        ln, th = rng.uniform(0.3, 1.2) * side, rng.uniform(0.015, 0.05) * side
        a = rng.normal(0, 0.25)
        p0 = np.array([cx - math.sin(a) * ln / 2, cy - math.cos(a) * ln / 2])
        p1 = np.array([cx + math.sin(a) * ln / 2, cy + math.cos(a) * ln / 2])
        for dst, c in ((code, val), (img, _col(col))):
            _capsule(dst, p0, p1, th, th, c)
    elif kind < 0.6:  # box / sign / table
        bw, bh = rng.uniform(0.08, 0.35, 2) * side
        box = np.array([[cx - bw / 2, cy - bh / 2], [cx + bw / 2, cy - bh / 2], [cx + bw / 2, cy + bh / 2],
                        [cx - bw / 2, cy + bh / 2]])
        q = np.round(box * _ONE).astype(np.int32)
        cv2.fillConvexPoly(code, q, val, cv2.LINE_8, _SH)
        cv2.fillConvexPoly(img, q, _col(col), cv2.LINE_8, _SH)
        cv2.polylines(img, [q], True, shade, max(1, int(side / 120)), cv2.LINE_8, _SH)
    else:  # ball / bush
        ax = rng.uniform(0.04, 0.18, 2) * side
        Q = np.diag(1.0 / ax ** 2)
        for dst, c in ((code, val), (img, _col(col))):
            _ellipse(dst, np.array([cx, cy]), Q, 0.0, c)


# --------------------------------------------------------------------------- annotation helpers
def _polygons(mask: np.ndarray, x0: int, y0: int) -> list[list[float]]:
    """Polygons (pycocotools mask frame) whose rasterisation is exactly ``mask`` (holes filled); the mask is a
    crop whose top-left pixel is (x0, y0)."""
    m2 = cv2.resize(mask, (mask.shape[1] * 2, mask.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m2, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        c = c.reshape(-1, 2).astype(np.float64) / 2.0 + 0.25 + np.array([x0, y0])
        if len(c) >= 3:
            out.append([round(float(v), 2) for v in c.reshape(-1)])
    return out


def _keypoint_pixels(xy: np.ndarray) -> np.ndarray:
    """Integer pixel (col, row) of continuous coordinates (pixel centres at integers)."""
    return np.floor(xy + 0.5).astype(np.int64)


# --------------------------------------------------------------------------- public API
def render_image(
    rng: np.random.Generator,
    size: tuple[int, int],
    max_people: int = 4,
    min_people: int = 0,
    schema: KeypointSchema | str = COCO17,
    crowd_prob: float = 0.1,
    small_prob: float = 0.15,
    occluder_prob: float = 0.35,
    min_head_px: float = 5.0,
    noise: bool = True,
    return_maps: bool = False,
    views: str = "all",
    head_range: tuple[float, float] | None = None,
    inside: bool = False,
    background: str = "textured",
):
    """Render one synthetic image and its COCO person annotations.

    Args:
        rng: the random generator (all randomness comes from it: same state, same output).
        size: ``(w, h)`` in pixels (each at least 16).
        max_people, min_people: the number of annotated-size people is uniform in ``[min_people, max_people]``
            (some may end fully hidden and be dropped); with probability ``small_prob`` each is drawn too small
            to annotate (head below ``min_head_px``: ``num_keypoints`` 0, segmentation present).
        schema: the keypoint schema to annotate (every keypoint name must be in :data:`SUPPORTED_KEYPOINTS`).
        crowd_prob: probability of a crowd region (a cluster of tiny figures, ``iscrowd`` 1, RLE segmentation).
        occluder_prob: probability of foreground objects (1-2) occluding people.
        min_head_px: people whose head height (px) is below this get no keypoints.
        noise: add sensor noise (and sometimes blur) to the finished image.
        views: ``"all"`` (mostly frontal, also side and back views, rarely far from upright) or ``"front"``
            (annotated people face the camera, yaw within +-40 degrees, upright): no left/right ambiguity.
        head_range: ``(lo, hi)`` head heights (px) of annotated-size people, log-uniform; default
            ``(min_head_px, max(min_head_px + 1, h / 6.8))``. A standing figure's box is about 8.6 head heights.
        inside: place every annotated-size person so that its box lies inside the image when it fits (else
            centred on that axis); default: box centres anywhere in the middle 90 % / 80 % (people may be cut).
        background: ``"textured"`` (gradient, noise, stripes, distractor shapes and thick lines) or ``"plain"``
            (the gradient and low-frequency noise only).
        return_maps: also return ``{"owner": (h, w) int32, "part": (h, w) int8}``: ``owner`` is the
            1-based index into ``annotations`` of the instance that shows at each pixel, 0 for background, -1 for
            foreground objects; ``part`` the body part index (see ``PART_NAMES``) or -1.

    Returns:
        ``(image, annotations)``: ``H x W x 3`` uint8 BGR, and a list of COCO annotation dicts without ``id`` and
        ``image_id`` (``category_id`` 1, ``keypoints``, ``num_keypoints``, ``bbox`` xywh, ``area``, ``iscrowd``,
        ``segmentation``); plus the maps with ``return_maps``.
    """
    schema = get_schema(schema)
    w, h = int(size[0]), int(size[1])
    if w < 16 or h < 16:
        raise ValueError(f"image size must be at least 16x16, got {w}x{h}")
    if not 0 <= min_people <= max_people:
        raise ValueError(f"need 0 <= min_people <= max_people, got min_people={min_people}, max_people={max_people}")
    unknown = [n for n in schema.keypoints if n not in _KEYPOINTS]
    if unknown:
        raise ValueError(f"schema {schema.name!r}: the synthetic generator cannot place keypoints {unknown}; "
                         f"supported: {list(SUPPORTED_KEYPOINTS)}")
    if views not in ("all", "front"):
        raise ValueError(f"views must be 'all' or 'front', got {views!r}")
    if background not in ("textured", "plain"):
        raise ValueError(f"background must be 'textured' or 'plain', got {background!r}")
    if head_range is not None:
        lo_head, hi_head = (float(v) for v in head_range)
        if not 0 < lo_head <= hi_head:
            raise ValueError(f"head_range must be 0 < lo <= hi (px), got {tuple(head_range)!r}")
        if lo_head < min_head_px:
            raise ValueError(f"head_range {tuple(head_range)!r} starts below min_head_px={min_head_px}: "
                             f"those people would get no keypoints")
    else:
        lo_head, hi_head = float(min_head_px), max(min_head_px + 1.0, h / 6.8)
    side = min(w, h)
    img = _background(rng, w, h, plain=background == "plain")
    code = np.zeros((h, w), np.int32)

    owner_next = 1
    instances: list[dict] = []  # owner, kind ("person" | "small" | "crowd"), figure

    # crowd region: a cluster of tiny figures, far away, painted first
    if rng.random() < crowd_prob:
        cw_, ch_ = rng.uniform(0.25, 0.6) * w, rng.uniform(0.1, 0.25) * h
        x0, y0 = rng.uniform(0, w - cw_), rng.uniform(0, h - ch_)
        n = int(rng.integers(8, 26))
        figs = []
        for _ in range(n):
            f = _Figure(rng, _u(rng, 1.6, max(1.7, min(min_head_px, 0.02 * side + 1.6))), detail=False)
            bb = f.bbox()
            f.translate(x0 + rng.uniform(0, cw_) - 0.5 * (bb[0] + bb[2]), y0 + rng.uniform(0, ch_) - 0.5 * (bb[1] + bb[3]))
            figs.append(f)
        figs.sort(key=lambda f: f.pts["pelvis"][1])
        for f in figs:
            _paint_figure(img, code, owner_next, f, detail=False)
        instances.append({"owner": owner_next, "kind": "crowd", "figure": None})
        owner_next += 1

    n_people = int(rng.integers(min_people, max_people + 1))
    figs = []
    for i in range(n_people):
        if rng.random() < small_prob:
            head = _u(rng, 2.0, min_head_px)
            kind = "small"
        else:
            head = math.exp(_u(rng, math.log(lo_head), math.log(hi_head)))
            kind = "person"
        f = _Figure(rng, head, detail=head >= 4, views=views if kind == "person" else "all")
        bb = f.bbox()
        if figs and rng.random() < 0.35:  # stand next to / in front of someone: overlaps
            ob = figs[int(rng.integers(len(figs)))][1].bbox()
            cx = 0.5 * (ob[0] + ob[2]) + rng.normal(0, 0.35) * (ob[2] - ob[0])
            cy = 0.5 * (ob[1] + ob[3]) + rng.normal(0, 0.15) * (ob[3] - ob[1])
        elif inside and kind == "person":  # the box centre anywhere the box fits
            bw, bh = bb[2] - bb[0], bb[3] - bb[1]
            cx = _u(rng, 0.5 * bw, w - 0.5 * bw) if bw <= w else 0.5 * w
            cy = _u(rng, 0.5 * bh, h - 0.5 * bh) if bh <= h else 0.5 * h
        else:
            cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.1, 0.9) * h
        if inside and kind == "person":  # a person standing next to someone stays inside too
            cx, cy = (float(np.clip(c, 0.5 * e, n - 0.5 * e)) if e <= n else 0.5 * n
                      for c, e, n in ((cx, bb[2] - bb[0], w), (cy, bb[3] - bb[1], h)))
        f.translate(cx - 0.5 * (bb[0] + bb[2]), cy - 0.5 * (bb[1] + bb[3]))
        figs.append((kind, f))
    figs.sort(key=lambda kf: kf[1].head_px)  # small (far) first
    for kind, f in figs:
        _paint_figure(img, code, owner_next, f, detail=f.head_px >= 4)
        instances.append({"owner": owner_next, "kind": kind, "figure": f})
        owner_next += 1

    if rng.random() < occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            people = [inst["figure"] for inst in instances if inst["kind"] == "person"]
            near = None
            if people and rng.random() < 0.75:
                f = people[int(rng.integers(len(people)))]
                near = f.pts[str(rng.choice(["pelvis", "left_knee", "right_wrist", "neck", "left_elbow"]))][:2]
            _paint_object(rng, img, code, w, h, near)

    if noise:
        sigma = _u(rng, 0, 7)
        if sigma > 0.5:
            img = np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32), 0, 255)
            img = img.astype(np.uint8)
        if rng.random() < 0.2:
            img = cv2.GaussianBlur(img, (3, 3), 0)

    # ---------------------------------------------------------------- annotations from the code map
    from pycocotools import mask as mask_utils

    owner_map = code >> _PART_BITS
    part_map = code & ((1 << _PART_BITS) - 1)
    names = schema.keypoints
    anns: list[dict] = []
    remap = {}
    for inst in instances:
        o = inst["owner"]
        if inst["kind"] == "crowd":
            m = (owner_map == o).astype(np.uint8)
            if m.sum() < 10:
                continue
            rle = mask_utils.encode(np.asfortranarray(m))
            area = float(mask_utils.area(rle))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({"category_id": 1, "iscrowd": 1, "keypoints": [0] * (3 * len(names)), "num_keypoints": 0,
                         "bbox": bbox, "area": area, "segmentation": {"size": [h, w], "counts": rle["counts"]}})
            remap[o] = len(anns)
            continue
        f = inst["figure"]
        bb = f.bbox()
        x0, y0 = max(int(math.floor(bb[0])) - 2, 0), max(int(math.floor(bb[1])) - 2, 0)
        x1, y1 = min(int(math.ceil(bb[2])) + 3, w), min(int(math.ceil(bb[3])) + 3, h)
        if x1 <= x0 or y1 <= y0:
            continue
        crop = (owner_map[y0:y1, x0:x1] == o).astype(np.uint8)
        if crop.sum() < 4:
            continue
        polys = _polygons(crop, x0, y0)
        if not polys:
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        area = float(mask_utils.area(rle))
        bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
        kps = np.zeros((len(names), 3))
        if inst["kind"] == "person":
            for k, name in enumerate(names):
                point, parts = _KEYPOINTS[name]
                x, y = (round(float(c), 2) for c in f.pts[point][:2])
                px, py = _keypoint_pixels(np.array([x, y]))
                if not (0 <= px < w and 0 <= py < h):
                    continue
                c = int(code[py, px])
                own = (c >> _PART_BITS) == o and (c & 15) in parts
                if name in _FACE and not f.face_facing[name]:
                    own = False
                kps[k] = (x, y, 2 if own else 1)
        anns.append({
            "category_id": 1, "iscrowd": 0,
            "keypoints": [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(kps.reshape(-1))],
            "num_keypoints": int((kps[:, 2] > 0).sum()),
            "bbox": bbox, "area": area, "segmentation": polys,
        })
        remap[o] = len(anns)

    if not return_maps:
        return img, anns
    lut_owner = np.full(owner_next, 0, np.int32)
    for o, idx in remap.items():
        lut_owner[o] = idx
    obj = owner_map == _OBJECT_OWNER
    owner_out = lut_owner[np.where(obj, 0, owner_map)]
    owner_out[obj] = -1
    part_out = np.where((owner_map > 0) & ~obj, part_map, -1).astype(np.int8)
    return img, anns, {"owner": owner_out, "part": part_out}


def make_synthetic_dataset(
    out_dir,
    num_images: int,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    max_people: int = 4,
    min_people: int = 0,
    schema: KeypointSchema | str = COCO17,
    crowd_prob: float = 0.1,
    jpeg_quality: int = 95,
    **render_kwargs,
) -> Path:
    """Write ``out_dir/images/NNNNNN.jpg`` and ``out_dir/person_keypoints.json`` (COCO person keypoints).

    Image ``i`` is rendered with ``np.random.default_rng([seed, i])``, so a dataset is byte-for-byte reproducible
    for a seed and its first images do not depend on ``num_images``. Image ids are ``1..num_images``; annotation
    ids count from 1. Extra keyword arguments go to :func:`render_image`. Returns the json path.
    """
    from posekit.data.io import write_image

    schema = get_schema(schema)
    if isinstance(num_images, bool) or int(num_images) != num_images or num_images < 0:
        raise ValueError(f"number of images must be a non-negative integer, got {num_images!r}")
    w, h = (int(v) for v in size)
    if w < 16 or h < 16:
        raise ValueError(f"image size must be at least 16x16, got {w}x{h}")
    if not 0.0 <= crowd_prob <= 1.0:
        raise ValueError(f"crowd_prob must be in [0, 1], got {crowd_prob}")
    if not 0 <= min_people <= max_people:
        raise ValueError(f"need 0 <= min_people <= max_people, got min_people={min_people}, max_people={max_people}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(int(num_images)):
        rng = np.random.default_rng([int(seed), i])
        img, anns = render_image(rng, (w, h), max_people=max_people, min_people=min_people, schema=schema,
                                 crowd_prob=crowd_prob, **render_kwargs)
        name = f"{i + 1:06d}.jpg"
        write_image(out / "images" / name, img, quality=jpeg_quality)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h, "license": 1,
                       "date_captured": "", "coco_url": "", "flickr_url": ""})
        for a in anns:
            annotations.append({"id": ann_id, "image_id": i + 1, **a})
            ann_id += 1
    coco = {
        "info": {"description": f"posekit synthetic people (seed {seed}, {w}x{h}, schema {schema.name})",
                 "version": "1.0", "year": 2024, "contributor": "posekit", "date_created": ""},
        "licenses": [{"id": 1, "name": "CC0 1.0 (generated data)",
                      "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [schema.to_coco_category(1, "person")],
    }
    path = out / "person_keypoints.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(coco, separators=(",", ":")))
    tmp.replace(path)
    return path
