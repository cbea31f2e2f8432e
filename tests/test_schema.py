import json

import numpy as np
import pytest

from posekit.schema import (
    COCO17,
    CROWDPOSE14,
    MPII16,
    OPENPOSE18,
    KeypointSchema,
    coco17_to_openpose18,
    get_schema,
    openpose18_to_coco17,
)


@pytest.mark.parametrize("schema,k,n_pairs", [(COCO17, 17, 8), (OPENPOSE18, 18, 8), (CROWDPOSE14, 14, 6), (MPII16, 16, 6)])
def test_builtin_sizes_and_flip_involution(schema, k, n_pairs):
    assert schema.num_keypoints == k
    assert len(schema.flip_pairs) == n_pairs
    perm = schema.flip_index
    assert np.array_equal(perm[perm], np.arange(k))
    # every flip pair is a left/right pair by name
    for a, b in schema.flip_pairs:
        na, nb = schema.keypoints[a], schema.keypoints[b]
        assert na.replace("left", "X").replace("right", "X") == nb.replace("left", "X").replace("right", "X")
    assert len(schema.sigmas) == len(schema.joint_weights) == k
    assert set(schema.upper_body) | set(schema.lower_body) == set(range(k))


def test_coco_values_match_cocoapi():
    # pycocotools' default kpt_oks_sigmas
    ref = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
    assert np.allclose(COCO17.sigmas_array, ref, atol=1e-12)
    assert COCO17.lower_body == tuple(range(11, 17))
    assert OPENPOSE18.index("neck") == 1
    assert OPENPOSE18.sigmas[OPENPOSE18.index("left_wrist")] == COCO17.sigmas[COCO17.index("left_wrist")]


def test_openpose_mapping_round_trip_and_neck():
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, (3, 17, 3))
    kp[..., 2] = 2
    kp[1, 5, 2] = 0  # person 1 lacks the left shoulder -> no neck
    op = coco17_to_openpose18(kp)
    assert op.shape == (3, 18, 3)
    assert np.array_equal(openpose18_to_coco17(op), kp)
    np.testing.assert_allclose(op[0, 1, :2], 0.5 * (kp[0, 5, :2] + kp[0, 6, :2]))
    assert np.all(op[1, 1] == 0)
    for k, name in enumerate(COCO17.keypoints):
        assert OPENPOSE18.keypoints[list(OPENPOSE18.keypoints).index(name)] == name
        np.testing.assert_array_equal(op[:, OPENPOSE18.index(name)], kp[:, k])
    with pytest.raises(ValueError, match="17 COCO keypoints"):
        coco17_to_openpose18(np.zeros((2, 16, 3)))


def test_from_coco_category_recognises_builtin_and_custom(tmp_path):
    cat = COCO17.to_coco_category()
    assert KeypointSchema.from_coco_category(cat) is COCO17
    custom = {"id": 1, "name": "hand", "keypoints": ["wrist", "left_tip", "right_tip", "mid"],
              "skeleton": [[1, 2], [1, 3], [1, 4]]}
    with pytest.warns(UserWarning, match="no OKS sigma"):
        s = KeypointSchema.from_coco_category(custom)
    assert s.flip_pairs == ((1, 2),)
    assert s.skeleton == ((0, 1), (0, 2), (0, 3))
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"categories": [custom], "images": [], "annotations": []}))
    with pytest.warns(UserWarning):
        assert KeypointSchema.from_file(p).keypoints == s.keypoints
    bad = dict(custom, skeleton=[[0, 2]])
    with pytest.raises(ValueError, match="1-based"):
        KeypointSchema.from_coco_category(bad)


def test_yaml_round_trip_and_errors(tmp_path):
    import yaml

    p = tmp_path / "crowd.yaml"
    p.write_text(yaml.safe_dump(CROWDPOSE14.to_dict()))
    s = get_schema(p)
    assert s == CROWDPOSE14
    p.write_text(yaml.safe_dump({"keypoints": ["a", "b"], "sigmas": [0.1], "skeleton": [[0, 1]]}))
    with pytest.raises(ValueError, match=r"crowd.yaml.*1 sigmas for 2 keypoints"):
        get_schema(p)
    p.write_text(yaml.safe_dump({"keypoints": ["a", "b"], "sigma": [0.1, 0.1]}))
    with pytest.raises(ValueError, match="unknown schema fields.*sigma"):
        get_schema(p)
    with pytest.raises(KeyError, match="unknown keypoint schema"):
        get_schema("coco99")
    assert get_schema("COCO") is COCO17 and get_schema("mpii") is MPII16


def test_validation_names_the_problem():
    with pytest.raises(ValueError, match="duplicate keypoint names"):
        KeypointSchema.from_names("x", ["a", "a"], sigmas=[0.1, 0.1])
    with pytest.raises(ValueError, match="out of range"):
        KeypointSchema.from_names("x", ["a", "b"], sigmas=[0.1, 0.1], skeleton=[(0, 2)])
