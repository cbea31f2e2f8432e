"""Keypoint schemas: the one place where keypoint metadata lives.

A :class:`KeypointSchema` holds the names of a keypoint set, its left/right flip pairs, the skeleton links (with
RGB colours for drawing), the OKS sigmas used by COCO-style evaluation, per-joint loss weights and the split into
upper and lower body (used by half-body augmentation). Datasets, augmentation, codecs, evaluation and drawing all
read it; none of them hard-codes keypoint indices.

Built in: ``COCO17``, ``OPENPOSE18`` (COCO-18 of CMU OpenPose, with the neck), ``CROWDPOSE14`` and ``MPII16``.
Custom schemas load from a COCO ``categories`` entry (:meth:`KeypointSchema.from_coco_category`) or from a small
YAML/JSON file (:meth:`KeypointSchema.from_file`).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "KeypointSchema",
    "COCO17",
    "OPENPOSE18",
    "CROWDPOSE14",
    "MPII16",
    "get_schema",
    "register_schema",
    "coco17_to_openpose18",
    "openpose18_to_coco17",
]

# Colours (RGB) used by the built-in schemas: centre/left/right, as in the usual COCO drawings.
BLUE = (51, 153, 255)
GREEN = (0, 255, 0)
ORANGE = (255, 128, 0)

_LEFT_RIGHT = [
    (re.compile(r"^left_"), "right_"),
    (re.compile(r"^right_"), "left_"),
    (re.compile(r"^l_"), "r_"),
    (re.compile(r"^r_"), "l_"),
    (re.compile(r"^left"), "right"),
    (re.compile(r"^right"), "left"),
    (re.compile(r"_left$"), "_right"),
    (re.compile(r"_right$"), "_left"),
    (re.compile(r"_l$"), "_r"),
    (re.compile(r"_r$"), "_l"),
]


def _mirror_name(name: str) -> str | None:
    """The name of the left/right counterpart of a keypoint name, or None when the name has no side."""
    low = name.lower()
    for pattern, repl in _LEFT_RIGHT:
        if pattern.search(low):
            return pattern.sub(repl, low, count=1)
    return None


def _side_colour(name: str) -> tuple[int, int, int]:
    low = name.lower()
    if low.startswith(("left", "l_")) or low.endswith(("_left", "_l")):
        return GREEN
    if low.startswith(("right", "r_")) or low.endswith(("_right", "_r")):
        return ORANGE
    return BLUE


@dataclass(frozen=True)
class KeypointSchema:
    """Metadata of a keypoint set.

    Attributes:
        name: short identifier (``"coco17"``).
        keypoints: keypoint names, in channel order.
        flip_pairs: ``(left, right)`` index pairs swapped by a horizontal flip.
        skeleton: ``(a, b)`` index pairs drawn as limbs.
        skeleton_colors: one RGB colour per skeleton link.
        keypoint_colors: one RGB colour per keypoint.
        sigmas: per-keypoint OKS sigma (COCO's ``kpt_oks_sigmas``, i.e. already divided by 10).
        joint_weights: per-keypoint loss weight.
        upper_body: indices of upper-body keypoints (half-body augmentation); the rest are lower body.
    """

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    skeleton_colors: tuple[tuple[int, int, int], ...] = ()
    keypoint_colors: tuple[tuple[int, int, int], ...] = ()
    joint_weights: tuple[float, ...] = ()
    upper_body: tuple[int, ...] = ()
    description: str = ""
    _index: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        if k == 0:
            raise ValueError(f"schema {self.name!r}: no keypoints")
        if len(set(self.keypoints)) != k:
            dup = sorted({n for n in self.keypoints if self.keypoints.count(n) > 1})
            raise ValueError(f"schema {self.name!r}: duplicate keypoint names {dup}")
        if len(self.sigmas) != k:
            raise ValueError(f"schema {self.name!r}: {len(self.sigmas)} sigmas for {k} keypoints")
        if any(not (s > 0) for s in self.sigmas):
            raise ValueError(f"schema {self.name!r}: sigmas must be > 0, got {list(self.sigmas)}")
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"schema {self.name!r}: skeleton link ({a}, {b}) out of range 0..{k - 1}")
        # Fill defaults that depend on the keypoint names.
        if not self.joint_weights:
            object.__setattr__(self, "joint_weights", tuple([1.0] * k))
        if not self.keypoint_colors:
            object.__setattr__(self, "keypoint_colors", tuple(_side_colour(n) for n in self.keypoints))
        if not self.skeleton_colors:
            cols = []
            for a, b in self.skeleton:
                ca, cb = _side_colour(self.keypoints[a]), _side_colour(self.keypoints[b])
                cols.append(ca if ca == cb else BLUE)
            object.__setattr__(self, "skeleton_colors", tuple(cols))
        for fname, n_expected in (("joint_weights", k), ("keypoint_colors", k), ("skeleton_colors", len(self.skeleton))):
            if len(getattr(self, fname)) != n_expected:
                raise ValueError(f"schema {self.name!r}: {fname} has {len(getattr(self, fname))} entries, expected {n_expected}")
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            for i in (a, b):
                if not 0 <= i < k:
                    raise ValueError(f"schema {self.name!r}: flip pair index {i} out of range 0..{k - 1}")
                if i in seen:
                    raise ValueError(f"schema {self.name!r}: keypoint {self.keypoints[i]!r} in two flip pairs")
                seen.add(i)
        for i in self.upper_body:
            if not 0 <= i < k:
                raise ValueError(f"schema {self.name!r}: upper_body index {i} out of range 0..{k - 1}")
        self._index.update({n: i for i, n in enumerate(self.keypoints)})

    # ----------------------------------------------------------------- queries
    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def __len__(self) -> int:
        return len(self.keypoints)

    def index(self, name: str) -> int:
        """Index of a keypoint by name (KeyError naming the schema and the known names)."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"schema {self.name!r} has no keypoint {name!r}; known: {list(self.keypoints)}") from None

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation ``p`` such that ``flipped[..., i, :] = keypoints[..., p[i], :]`` after a horizontal flip."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def lower_body(self) -> tuple[int, ...]:
        upper = set(self.upper_body)
        return tuple(i for i in range(self.num_keypoints) if i not in upper)

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    @property
    def joint_weights_array(self) -> np.ndarray:
        return np.asarray(self.joint_weights, dtype=np.float32)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_names(
        cls,
        name: str,
        keypoints: Sequence[str],
        skeleton: Iterable[Sequence[int]] = (),
        sigmas: Sequence[float] | None = None,
        flip_pairs: Iterable[Sequence[int]] | None = None,
        joint_weights: Sequence[float] | None = None,
        upper_body: Iterable[int | str] | None = None,
        skeleton_colors: Sequence[Sequence[int]] | None = None,
        keypoint_colors: Sequence[Sequence[int]] | None = None,
        description: str = "",
    ) -> "KeypointSchema":
        """Build a schema from names, inferring what is not given.

        Flip pairs are inferred from ``left``/``right`` (``l_``/``r_``) in the names; sigmas of names known from the
        built-in schemas are reused and unknown ones get the mean COCO sigma (with a warning), because an OKS with
        no sigma is undefined; upper body defaults to every keypoint whose name does not mention hip, knee, ankle,
        foot, heel, toe or pelvis.
        """
        keypoints = [str(n) for n in keypoints]
        index = {n: i for i, n in enumerate(keypoints)}
        if flip_pairs is None:
            pairs = []
            for i, n in enumerate(keypoints):
                m = _mirror_name(n)
                if m is None:
                    continue
                j = next((jj for jj, nn in enumerate(keypoints) if nn.lower() == m), None)
                if j is not None and i < j:
                    pairs.append((i, j))
            flip_pairs = pairs
        if sigmas is None:
            known = {}
            for s in _BUILTIN.values():
                for n, sg in zip(s.keypoints, s.sigmas):
                    known.setdefault(n, sg)
            default = float(np.mean(COCO17.sigmas))
            missing = [n for n in keypoints if n not in known]
            if missing:
                warnings.warn(
                    f"schema {name!r}: no OKS sigma for {missing}; using the mean COCO sigma {default:.4f}. "
                    "Give 'sigmas' to evaluate with the right tolerance.",
                    stacklevel=2,
                )
            sigmas = [known.get(n, default) for n in keypoints]
        if upper_body is None:
            lower_words = ("hip", "knee", "ankle", "foot", "heel", "toe", "pelvis")
            upper_body = [i for i, n in enumerate(keypoints) if not any(w in n.lower() for w in lower_words)]
        upper = []
        for u in upper_body:
            if isinstance(u, str):
                if u not in index:
                    raise ValueError(f"schema {name!r}: upper_body names unknown keypoint {u!r}")
                upper.append(index[u])
            else:
                upper.append(int(u))

        def _pairs(items, what):
            out = []
            for p in items:
                if len(p) != 2:
                    raise ValueError(f"schema {name!r}: {what} entry {p!r} is not a pair")
                out.append(tuple(index[x] if isinstance(x, str) else int(x) for x in p))
            return tuple(out)

        return cls(
            name=name,
            keypoints=tuple(keypoints),
            flip_pairs=_pairs(flip_pairs, "flip_pairs"),
            skeleton=_pairs(skeleton, "skeleton"),
            sigmas=tuple(float(s) for s in sigmas),
            joint_weights=tuple(float(w) for w in joint_weights) if joint_weights is not None else (),
            upper_body=tuple(upper),
            skeleton_colors=tuple(tuple(int(c) for c in col) for col in skeleton_colors) if skeleton_colors else (),
            keypoint_colors=tuple(tuple(int(c) for c in col) for col in keypoint_colors) if keypoint_colors else (),
            description=description,
        )

    @classmethod
    def from_coco_category(cls, category: Mapping, name: str | None = None, **overrides) -> "KeypointSchema":
        """Schema from a COCO ``categories`` entry: ``keypoints`` (names) and ``skeleton`` (1-based pairs)."""
        if "keypoints" not in category or not category["keypoints"]:
            raise ValueError(f"COCO category {category.get('name', '?')!r} has no 'keypoints' list")
        names = list(category["keypoints"])
        builtin = next((s for s in _BUILTIN.values() if list(s.keypoints) == names), None)
        if builtin is not None and not overrides:
            return builtin
        skeleton = []
        for link in category.get("skeleton", []) or []:
            if len(link) != 2 or not all(1 <= int(x) <= len(names) for x in link):
                raise ValueError(
                    f"COCO category {category.get('name', '?')!r}: skeleton link {link!r} is not a pair of 1-based "
                    f"indices into {len(names)} keypoints"
                )
            skeleton.append((int(link[0]) - 1, int(link[1]) - 1))
        return cls.from_names(name or str(category.get("name", "custom")), names, skeleton=skeleton, **overrides)

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "<dict>") -> "KeypointSchema":
        """Schema from a plain dict (the YAML/JSON file format, documented in docs/schemas.md)."""
        if "keypoints" not in d:
            raise ValueError(f"{source}: schema has no 'keypoints' field")
        allowed = {
            "name", "keypoints", "skeleton", "sigmas", "flip_pairs", "joint_weights", "upper_body",
            "skeleton_colors", "keypoint_colors", "description",
        }
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"{source}: unknown schema fields {sorted(unknown)}; allowed: {sorted(allowed)}")
        kw = {k: d[k] for k in allowed - {"name", "keypoints"} if k in d and d[k] is not None}
        try:
            return cls.from_names(str(d.get("name", Path(source).stem)), d["keypoints"], **kw)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{source}: {e}") from e

    @classmethod
    def from_file(cls, path: str | Path) -> "KeypointSchema":
        """Schema from a YAML or JSON file (a dict as in :meth:`from_dict`, or a COCO json with ``categories``)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() == ".json":
            d = json.loads(text)
        else:
            import yaml

            d = yaml.safe_load(text)
        if not isinstance(d, dict):
            raise ValueError(f"{path}: a schema file must hold a mapping, got {type(d).__name__}")
        if "categories" in d:
            cats = [c for c in d["categories"] if c.get("keypoints")]
            if not cats:
                raise ValueError(f"{path}: no category with 'keypoints'")
            return cls.from_coco_category(cats[0])
        return cls.from_dict(d, source=str(path))

    def to_dict(self) -> dict:
        """The file format of :meth:`from_dict` (round-trips exactly)."""
        return {
            "name": self.name,
            "keypoints": list(self.keypoints),
            "skeleton": [list(p) for p in self.skeleton],
            "sigmas": list(self.sigmas),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "joint_weights": list(self.joint_weights),
            "upper_body": list(self.upper_body),
            "skeleton_colors": [list(c) for c in self.skeleton_colors],
            "keypoint_colors": [list(c) for c in self.keypoint_colors],
            "description": self.description,
        }

    def to_coco_category(self, category_id: int = 1, name: str = "person") -> dict:
        """A COCO ``categories`` entry (1-based skeleton) for this schema."""
        return {
            "id": category_id,
            "name": name,
            "supercategory": name,
            "keypoints": list(self.keypoints),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }


# --------------------------------------------------------------------- built-in schemas
_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)

COCO17 = KeypointSchema(
    name="coco17",
    keypoints=_COCO_NAMES,
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    skeleton_colors=(
        GREEN, GREEN, ORANGE, ORANGE, BLUE, BLUE, BLUE, BLUE, GREEN, ORANGE,
        GREEN, ORANGE, BLUE, BLUE, BLUE, BLUE, BLUE, BLUE, BLUE,
    ),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    joint_weights=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
    upper_body=tuple(range(11)),
    description="COCO person keypoints (17)",
)

_OPENPOSE_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
#: COCO-17 keypoint k is OpenPose-18 part ``COCO17_TO_OPENPOSE18_INDEX[k]``.
COCO17_TO_OPENPOSE18_INDEX = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)

_coco_sigma = dict(zip(_COCO_NAMES, COCO17.sigmas))
_coco_weight = dict(zip(_COCO_NAMES, COCO17.joint_weights))

OPENPOSE18 = KeypointSchema.from_names(
    "openpose18",
    _OPENPOSE_NAMES,
    # The 19 limbs of CMU OpenPose's COCO model, in its PAF order.
    skeleton=(
        (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
        (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
    ),
    # The neck has no COCO sigma: CrowdPose's neck sigma (0.079, the shoulders') is used.
    sigmas=[_coco_sigma.get(n, 0.079) for n in _OPENPOSE_NAMES],
    joint_weights=[_coco_weight.get(n, 1.0) for n in _OPENPOSE_NAMES],
    description="CMU OpenPose COCO-18 (COCO-17 plus the neck, OpenPose part order)",
)

_CROWDPOSE_NAMES = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "top_head", "neck",
)
CROWDPOSE14 = KeypointSchema.from_names(
    "crowdpose14",
    _CROWDPOSE_NAMES,
    skeleton=(
        (10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5),
        (12, 13), (1, 13), (0, 13),
    ),
    sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079),
    joint_weights=(0.2, 0.2, 0.2, 1.3, 1.5, 0.2, 1.3, 1.5, 0.2, 0.2, 0.5, 0.2, 0.2, 0.5),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
    description="CrowdPose (14)",
)

_MPII_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist",
)
MPII16 = KeypointSchema.from_names(
    "mpii16",
    _MPII_NAMES,
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (8, 12), (12, 11), (11, 10),
        (8, 13), (13, 14), (14, 15),
    ),
    sigmas=(0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072, 0.179, 0.179,
            0.072, 0.062),
    joint_weights=(1.5, 1.2, 1.0, 1.0, 1.2, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.5),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
    description="MPII Human Pose (16)",
)

_BUILTIN: dict[str, KeypointSchema] = {s.name: s for s in (COCO17, OPENPOSE18, CROWDPOSE14, MPII16)}
_ALIASES = {"coco": "coco17", "coco-17": "coco17", "openpose": "openpose18", "coco18": "openpose18",
            "openpose-18": "openpose18", "crowdpose": "crowdpose14", "mpii": "mpii16"}


def register_schema(schema: KeypointSchema) -> None:
    """Make a custom schema available to :func:`get_schema` by its name."""
    _BUILTIN[schema.name] = schema


def get_schema(spec: "str | Path | KeypointSchema | Mapping") -> KeypointSchema:
    """A schema by name (``"coco17"``, ``"openpose18"``, ...), from a YAML/JSON path, a dict, or as given."""
    if isinstance(spec, KeypointSchema):
        return spec
    if isinstance(spec, Mapping):
        return KeypointSchema.from_dict(spec)
    key = _ALIASES.get(str(spec).lower(), str(spec).lower())
    if key in _BUILTIN:
        return _BUILTIN[key]
    if str(spec) in _BUILTIN:
        return _BUILTIN[str(spec)]
    p = Path(str(spec))
    if p.suffix.lower() in (".yaml", ".yml", ".json"):
        if not p.is_file():
            raise FileNotFoundError(f"keypoint schema file not found: {p}")
        return KeypointSchema.from_file(p)
    raise KeyError(f"unknown keypoint schema {spec!r}; built in: {sorted(_BUILTIN)} (or a .yaml/.json path)")


# --------------------------------------------------------------------- conversions
def openpose18_to_coco17(keypoints: np.ndarray) -> np.ndarray:
    """``(..., 18, C)`` OpenPose-18 keypoints to ``(..., 17, C)`` COCO-17 (the neck is dropped)."""
    keypoints = np.asarray(keypoints)
    if keypoints.shape[-2] != 18:
        raise ValueError(f"expected 18 OpenPose keypoints on axis -2, got shape {keypoints.shape}")
    return keypoints[..., list(COCO17_TO_OPENPOSE18_INDEX), :]


def coco17_to_openpose18(keypoints: np.ndarray) -> np.ndarray:
    """``(..., 17, C)`` COCO-17 keypoints (x, y[, v or score]) to ``(..., 18, C)`` OpenPose-18.

    The neck is the midpoint of the shoulders where both are present (third column > 0, or always when C == 2);
    its third column is the smaller of the two shoulders'; where a shoulder is missing the neck is all zeros.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64 if np.asarray(keypoints).dtype.kind != "f" else None)
    if keypoints.shape[-2] != 17:
        raise ValueError(f"expected 17 COCO keypoints on axis -2, got shape {keypoints.shape}")
    out = np.zeros(keypoints.shape[:-2] + (18, keypoints.shape[-1]), dtype=keypoints.dtype)
    out[..., list(COCO17_TO_OPENPOSE18_INDEX), :] = keypoints
    ls, rs = keypoints[..., 5, :], keypoints[..., 6, :]
    neck = 0.5 * (ls + rs)
    if keypoints.shape[-1] > 2:
        present = (ls[..., 2] > 0) & (rs[..., 2] > 0)
        neck[..., 2] = np.minimum(ls[..., 2], rs[..., 2])
        neck = np.where(present[..., None], neck, 0)
    out[..., 1, :] = neck
    return out
