"""posekit.batch.plan without Ray: listing and ids in ``posekit predict``'s order, units, shard validation, the
merge (tracking across video ranges), the errors file, object-store style writes (``file://`` through pyarrow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from posekit.batch import plan as P


@pytest.fixture
def folder(tmp_path):
    import cv2

    d = tmp_path / "src"
    d.mkdir()
    for name in ("b.png", "a.jpg"):
        cv2.imwrite(str(d / name), np.full((24, 32, 3), 100, np.uint8))
    (d / "notes.txt").write_text("not an image")
    w = cv2.VideoWriter(str(d / "c.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(7):
        w.write(np.full((24, 32, 3), 30 * i, np.uint8))
    w.release()
    (tmp_path / "lone.jpg").write_bytes((d / "a.jpg").read_bytes())
    return tmp_path


def test_listing_ids_and_units_follow_predict(folder):
    sources = [str(folder / "src"), str(folder / "missing.jpg"), str(folder / "lone.jpg"), "0"]
    items = [it for i, s in enumerate(sources) for it in P.list_source(i, s)]
    items = P.assign_ids(items[::-1])  # any listing order: sorted back into reading order
    kinds = [(it.kind, it.path.rsplit("/", 1)[-1], it.image_id) for it in items]
    # predict: images 1, 2, 3 in order (a.jpg, b.png in the folder, then lone.jpg); the video's frames follow
    assert kinds == [("image", "a.jpg", 1), ("image", "b.png", 2), ("video", "c.avi", 4),
                     ("error", "missing.jpg", None), ("image", "lone.jpg", 3), ("error", "0", None)]
    assert items[1].order < items[2].order and items[2].frames == 7
    assert "not found" in items[3].error and "webcam" in items[5].error
    units = P.make_units(items, images_per_unit=2, frames_per_unit=3)
    assert [(u.kind, [e[0] for e in u.entries]) for u in units] == [
        ("images", [1, 2]), ("images", [3]), ("video", [4, 5, 6]), ("video", [7, 8, 9]), ("video", [10])]
    assert [e[2] for e in units[3].entries] == [3, 4, 5]  # frame numbers within the video
    capped = P.list_source(0, str(folder / "src" / "c.avi"), max_frames=4)
    assert capped[0].frames == 4
    with pytest.raises(ValueError, match=">= 1"):
        P.make_units(items, images_per_unit=0)


def test_coco_file_source_and_annotations_ids(folder):
    ann = {"images": [{"id": 42, "file_name": "a.jpg"}, {"id": 7, "file_name": "b.png"}], "annotations": [],
           "categories": [{"id": 1, "name": "person"}]}
    (folder / "src" / "ann.json").write_text(json.dumps(ann))
    items = P.assign_ids(P.list_source(0, str(folder / "src" / "ann.json")))
    assert [(it.path.rsplit("/", 1)[-1], it.image_id) for it in items] == [("a.jpg", 42), ("b.png", 7)]
    mixed = P.list_source(0, str(folder / "src" / "ann.json")) + P.list_source(1, str(folder / "lone.jpg"))
    with pytest.raises(ValueError, match="cannot be mixed"):
        P.assign_ids(mixed)
    by_name = P.assign_ids(P.list_source(0, str(folder / "lone.jpg")), {"lone.jpg": 99})
    assert by_name[0].image_id == 99
    with pytest.raises(ValueError, match="not in the --annotations"):
        P.assign_ids(P.list_source(0, str(folder / "lone.jpg")), {"other.jpg": 1})
    with pytest.raises(ValueError, match="cannot be used with videos"):
        P.assign_ids(P.list_source(0, str(folder / "src")), {"a.jpg": 1, "b.png": 2})
    bad = folder / "bad.json"
    bad.write_text("{}")
    assert P.list_source(3, str(bad))[0].kind == "error"


def _unit(kind="images", n=2, start_id=1, path="x.jpg"):
    entries = [[start_id + i, path, None if kind == "images" else i] for i in range(n)]
    u = P.Unit(0, kind, entries)
    u.key = P.shard_name(u, P.settings_digest({"model": "m"}))
    return u


def _person(x, score):
    kp = np.column_stack([np.arange(17) * 2.0 + x, np.arange(17) + 0.123456789, np.full(17, 0.9)]).astype(np.float32)
    return {"keypoints": kp.reshape(-1).tolist(), "box": [x, 0.0, x + 40.0, 20.0], "score": score}


def test_shard_is_complete_or_rejected():
    u = _unit()
    records = [{"image_id": 1, "source": "x.jpg", "frame": None, "people": [_person(3.0, 0.8)]},
               {"image_id": 2, "source": "x.jpg", "frame": None, "error": "file not found"}]
    text = P.shard_bytes(u, records, "coco17").decode()
    header, got = P.read_shard(text, u)
    assert got == records and header["schema"] == "coco17" and header["n"] == 2
    lines = text.splitlines()
    for broken, why in (("\n".join(lines[:-1]), "incomplete"), ("\n".join(lines[:2]), "incomplete"),
                        (text.replace(u.key, "other"), "does not name"), (text[:-9], "not JSON"),
                        (text.replace('"image_id": 2', '"image_id": 3'), "image id 3")):
        with pytest.raises(P.ShardError, match=why):
            P.read_shard(broken, u)
    with pytest.raises(ValueError, match="records for 2 entries"):
        P.shard_bytes(u, records[:1], "coco17")
    # the name depends on the entries and the settings: other weights never reuse a shard
    other = P.Unit(0, "images", u.entries)
    assert P.shard_name(other, P.settings_digest({"model": "m", "weights": "w2"})) != u.key
    assert P.shard_name(other, P.settings_digest({"model": "m"})) == u.key


def test_merge_tracks_across_ranges_like_one_tracker():
    """Two ranges of one video (as two actors ran them) merge to the track ids of one tracker over all frames;
    the keypoints are full precision in the shard and rounded as Person.to_coco rounds them."""
    from posekit.pipelines.tracking import GreedyTracker
    from posekit.structures import Person

    frames = [[_person(10.0 + 2 * f, 0.9), _person(200.0 - 3 * f, 0.7)] for f in range(6)]
    frames[3] = frames[3][::-1]  # order changes: ids must follow the people, not the order
    units, shards = [], []
    for start in (0, 3):
        u = P.Unit(len(units), "video", [[100 + f, "v.avi", f] for f in range(start, start + 3)], key=f"k{start}")
        recs = [{"image_id": 100 + f, "source": "v.avi", "frame": f, "people": frames[f]}
                for f in range(start, start + 3)]
        units.append(u)
        shards.append(P.read_shard(P.shard_bytes(u, recs, "coco17").decode(), u))
    video_people = {}
    results, errors, counts = P.merge_shards(units, shards, category_id=1, video_people=video_people)
    tracker = GreedyTracker("coco17")
    want = []
    for f, people in enumerate(frames):
        ps = tracker.update([Person(np.reshape(p["keypoints"], (-1, 3)), p["box"], p["score"]) for p in people])
        want += [p.to_coco(100 + f, 1) for p in ps]
    assert results == want and not errors and counts == {"images": 6, "people": 12}
    # what the overlay video is drawn from: every frame in order with its tracked people (the results' track ids)
    assert [f for f, _ in video_people["v.avi"]] == list(range(6))
    assert [p.to_coco(100 + f, 1) for f, ps in video_people["v.avi"] for p in ps] == want
    assert {r["track_id"] for r in results} == {0, 1}
    assert results[0]["keypoints"][1] == round(float(np.float32(0.123456789)), 3)


def test_errors_by_source_groups_video_frames():
    records = [{"image_id": 3, "source": "a.jpg", "frame": None, "error": "truncated file"}] + [
        {"image_id": 10 + f, "source": "v.avi", "frame": f, "error": "the video ends at frame 5"} for f in (5, 6, 7)]
    out = P.errors_by_source([{"source": "m.jpg", "error": "source not found: m.jpg"}], records)
    assert out == [{"source": "m.jpg", "error": "source not found: m.jpg"},
                   {"source": "a.jpg", "error": "truncated file"},
                   {"source": "v.avi", "error": "3 frame(s) could not be read (5..7): the video ends at frame 5"}]


def test_text_io_local_and_uri(tmp_path):
    """Shards go through pyarrow.fs for a URI (object stores: s3://, gs://, ...); file:// exercises that path."""
    pytest.importorskip("pyarrow")
    for folder in (str(tmp_path / "local"), (tmp_path / "uri").as_uri()):
        path = P.join(folder, "s.jsonl")
        assert P.read_text(path) is None
        if "://" in folder:
            (tmp_path / "uri").mkdir()
        P.write_text(path, "one\ntwo\n")
        assert P.read_text(path) == "one\ntwo\n"
    assert not [p for p in (tmp_path / "local").iterdir() if p.name.endswith(".tmp")]


def test_object_store_sources_read_like_files(folder):
    """Images under a URI prefix (file:// here; s3:// and gs:// take the same pyarrow.fs path) are listed like a
    folder and decoded by the read task with read_image's checks and reasons."""
    pytest.importorskip("pyarrow")
    from posekit.batch.engine import decode_unit
    from posekit.data.io import read_image

    src = folder / "src"
    (src / "cut.jpg").write_bytes((src / "a.jpg").read_bytes()[:-40])
    items = P.assign_ids(P.list_source(0, src.as_uri()) + P.list_source(1, (folder / "nope").as_uri())
                         + P.list_source(2, (src / "c.avi").as_uri()))
    names = [(it.kind, it.path.rsplit("/", 1)[-1], it.image_id) for it in items]
    assert names == [("image", "a.jpg", 1), ("image", "b.png", 2), ("image", "cut.jpg", 3),
                     ("error", "nope", None), ("error", "c.avi", None)]
    assert items[0].path.startswith("file://") and "only images" in items[4].error
    entries = [[it.image_id, it.path, None] for it in items[:3]] + [[4, (folder / "gone.jpg").as_uri(), None]]
    unit = P.Unit(0, "images", entries, key="k")
    row = decode_unit({"unit": unit.to_json()})
    errors = json.loads(row["errors"])
    assert errors[:2] == [None, None] and "truncated" in errors[2] and errors[3] == "file not found"
    a, b = read_image(src / "a.jpg"), read_image(src / "b.png")
    assert row["shapes"].tolist() == [list(a.shape), list(b.shape), [0, 0, 0], [0, 0, 0]]
    np.testing.assert_array_equal(row["pixels"], np.concatenate([a.reshape(-1), b.reshape(-1)]))


def test_decode_unit_reads_video_ranges_exactly(folder):
    """A frame range is reached by grabbing from the start: frames 3..5 equal the 4th..6th frames read in order;
    frames past the end carry the reason."""
    import cv2

    path = str(folder / "src" / "c.avi")
    cap = cv2.VideoCapture(path)
    frames = [cap.read()[1] for _ in range(7)]
    cap.release()
    from posekit.batch.engine import decode_unit

    unit = P.Unit(0, "video", [[10 + f, path, f] for f in range(5, 9)], key="k")
    row = decode_unit({"unit": unit.to_json()})
    errors = json.loads(row["errors"])
    assert errors[:2] == [None, None] and errors[2] == errors[3] == "the video ends at frame 7 (its header says more)"
    np.testing.assert_array_equal(row["pixels"], np.concatenate([frames[5].reshape(-1), frames[6].reshape(-1)]))
