"""Run directory state, queue files and label import (CSV and Label Studio)."""

import json
from xml.etree import ElementTree

import pandas as pd
import pytest

from activevlm.runs import RunState, import_labels, write_queue
from activevlm.runs.queue import label_studio_config

CLASSES = ["Alarm_Clock", "dog", "house"]
IDS = {f"img_{i}.jpg" for i in range(10)}


@pytest.fixture
def state(tmp_path):
    return RunState.create(tmp_path / "run", pool="pools/x", model_id="m1", classnames=CLASSES)


def _queue(ids):
    return pd.DataFrame({
        "rank": range(len(ids)), "sample_id": ids, "path": [f"/data/{i}" for i in ids],
        "score": [1.0 / (r + 1) for r in range(len(ids))],
        "predicted_label": ["dog"] * len(ids), "predicted_prob": [0.5] * len(ids),
    })


def test_state_round_trip_and_exclusions(state):
    state.labels["img_1.jpg"] = 2
    state.queued["img_2.jpg"] = 0
    state.ignored.append("img_3.jpg")
    state.rounds.append({"strategy": "epig", "budget": 2})
    state.save()
    again = RunState.load(state.path)
    assert again.labels == {"img_1.jpg": 2}
    assert again.round == 1
    assert again.excluded() == {"img_1.jpg", "img_2.jpg", "img_3.jpg"}


def test_state_refuses_other_model_and_bad_files(state, tmp_path):
    with pytest.raises(ValueError, match="m1"):
        RunState.open_or_create(state.path, "pools/x", "m2", CLASSES)
    (state.path / "state.json").write_text("{broken")
    with pytest.raises(ValueError, match="state.json"):
        RunState.load(state.path)
    with pytest.raises(FileNotFoundError, match="no run"):
        RunState.load(tmp_path / "nowhere")


def test_write_queue_formats(tmp_path):
    root = tmp_path / "docroot"
    q = _queue(["img_4.jpg", "img_5.jpg"])
    q["path"] = [str(root / "imgs" / "a b" / "img_4.jpg"), str(root / "imgs" / "img_5.jpg")]
    paths = write_queue(tmp_path, q, CLASSES, root)
    pq = pd.read_parquet(paths["parquet"])
    csv = pd.read_csv(paths["csv"])
    assert list(pq.sample_id) == list(csv.sample_id) == ["img_4.jpg", "img_5.jpg"]
    tasks = json.loads(paths["labelstudio"].read_text())
    assert tasks[0]["data"] == {"image": "/data/local-files/?d=imgs/a%20b/img_4.jpg",
                                "sample_id": "img_4.jpg", "rank": 0, "score": 1.0}
    assert tasks[1]["data"]["image"] == "/data/local-files/?d=imgs/img_5.jpg"
    assert [t["data"]["rank"] for t in tasks] == [0, 1]
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["dog"]
    config = ElementTree.fromstring(paths["labelstudio_config"].read_text())
    choices = config.find("Choices")
    assert (choices.get("name"), choices.get("toName")) == ("label", "image")
    assert [c.get("value") for c in choices.iter("Choice")] == CLASSES
    assert config.find("Image").get("value") == "$image"

    bare = write_queue(tmp_path / "bare", q, CLASSES, root, predictions=False)
    assert all("predictions" not in t for t in json.loads(bare["labelstudio"].read_text()))
    with pytest.raises(ValueError, match="outside the Label Studio document root"):
        write_queue(tmp_path / "out", q, CLASSES, root / "imgs" / "a b")
    assert not (tmp_path / "out" / "queue.parquet").exists()
    with pytest.raises(ValueError, match="score"):
        write_queue(tmp_path, _queue(["a"]).drop(columns="score"), CLASSES, "/")


def test_label_studio_config_escapes_class_names():
    xml = label_studio_config(['say "hi"', "a<b & c"])
    assert [c.get("value") for c in ElementTree.fromstring(xml).iter("Choice")] == [
        'say "hi"', "a<b & c"]


def test_csv_import_is_validated_atomic_and_idempotent(state, tmp_path):
    state.queued.update({"img_1.jpg": 0, "img_2.jpg": 0, "img_3.jpg": 0})
    good = tmp_path / "labels.csv"
    good.write_text("sample_id,label\nimg_1.jpg,dog\nimg_2.jpg,Alarm Clock\nimg_3.jpg,2\n")
    report = import_labels(state, good, IDS)
    assert report.new == 3
    assert state.labels == {"img_1.jpg": 1, "img_2.jpg": 0, "img_3.jpg": 2}
    assert state.queued == {}
    assert RunState.load(state.path).labels == state.labels

    again = import_labels(state, good, IDS)
    assert (again.new, again.unchanged, again.changed) == (0, 3, 0)

    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,label\nimg_4.jpg,dog\nimg_5.jpg,cat\nimg_6.jpg,zebra\n")
    with pytest.raises(ValueError, match=r"\['cat', 'zebra'\]"):
        import_labels(state, bad, IDS)
    assert "img_4.jpg" not in RunState.load(state.path).labels  # nothing partially applied

    stranger = tmp_path / "stranger.csv"
    stranger.write_text("sample_id,label\nnot_in_pool.jpg,dog\n")
    with pytest.raises(ValueError, match="not_in_pool.jpg"):
        import_labels(state, stranger, IDS)


def _task(sid, *annotations):
    """A Label Studio JSON export task; each annotation is a class name or None (cancelled)."""
    return {"id": hash(sid) % 1000, "data": {"sample_id": sid, "image": f"/x/{sid}"},
            "annotations": [{"completed_by": i, "was_cancelled": a is None, "result": [] if
                             a is None else [{"from_name": "label", "to_name": "image",
                                              "type": "choices", "value": {"choices": [a]}}]}
                            for i, a in enumerate(annotations)]}


def test_label_studio_json_skips_only_cancelled_and_takes_the_majority(state, tmp_path):
    export = [_task("img_7.jpg", "house"), _task("img_8.jpg", None), _task("img_9.jpg"),
              _task("img_1.jpg", "dog", "house", "dog"), _task("img_2.jpg", None, "house")]
    state.queued.update({sid: 0 for sid in ["img_7.jpg", "img_8.jpg", "img_9.jpg"]})
    f = tmp_path / "export.json"
    f.write_text(json.dumps(export))
    report = import_labels(state, f, IDS)
    assert state.labels == {"img_7.jpg": 2, "img_1.jpg": 1, "img_2.jpg": 2}
    assert report.skipped == ["img_8.jpg"]  # the unannotated img_9 is not skipped
    assert state.ignored == ["img_8.jpg"] and state.queued == {"img_9.jpg": 0}
    assert report.disagreements == {"img_1.jpg": {"dog": 2, "house": 1}}

    no_id = tmp_path / "noid.json"
    no_id.write_text(json.dumps([{"data": {"image": "x.jpg"}, "annotations": []}]))
    with pytest.raises(ValueError, match="sample_id"):
        import_labels(state, no_id, IDS)


def test_a_tie_is_refused_listing_the_ids_in_every_format(state, tmp_path):
    votes = {"img_3.jpg": ["dog", "house"], "img_4.jpg": ["dog", "dog", "house", "house"],
             "img_5.jpg": ["dog", "1", "house"]}  # 1 is dog: a majority, not a tie
    full = tmp_path / "full.json"
    full.write_text(json.dumps([_task(sid, *v) for sid, v in votes.items()]))
    rows = [{"sample_id": sid, "label": v, "annotator": i, "annotation_id": 10 * i}
            for sid, vs in votes.items() for i, v in enumerate(vs)]
    minimal = tmp_path / "min.json"
    minimal.write_text(json.dumps(rows))
    csv = tmp_path / "ls.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    for f in (full, minimal, csv):
        with pytest.raises(ValueError, match=r"2 item\(s\) have no majority") as e:
            import_labels(state, f, IDS)
        assert "img_3.jpg" in str(e.value) and "img_4.jpg" in str(e.value)
        assert "img_5.jpg" not in str(e.value) and state.labels == {}
    ok = {sid: v + ["house"] for sid, v in votes.items()}  # breaks both ties, img_5 ties now
    ok["img_5.jpg"] = ["1"]
    full.write_text(json.dumps([_task(sid, *v) for sid, v in ok.items()]))
    report = import_labels(state, full, IDS)
    assert state.labels == {"img_3.jpg": 2, "img_4.jpg": 2, "img_5.jpg": 1}
    assert set(report.disagreements) == {"img_3.jpg", "img_4.jpg"}


def test_json_min_and_label_studio_csv_read_like_the_json_export(state, tmp_path):
    """The three exports of one project (as Label Studio 1.23 writes them: JSON-MIN and CSV
    have one record per annotation, the unannotated task once without a label, and leave
    cancelled annotations out) import to the same labels."""
    minimal = [
        {"image": "/x", "sample_id": "img_1.jpg", "rank": 0, "id": 1, "label": "dog",
         "annotator": 1, "annotation_id": 3, "lead_time": None},
        {"image": "/x", "sample_id": "img_1.jpg", "rank": 0, "id": 1, "label": "house",
         "annotator": 2, "annotation_id": 2, "lead_time": None},
        {"image": "/x", "sample_id": "img_1.jpg", "rank": 0, "id": 1, "label": "dog",
         "annotator": 1, "annotation_id": 1, "lead_time": None},
        {"image": "/x", "sample_id": "img_2.jpg", "rank": 1, "id": 2},
    ]
    f = tmp_path / "min.json"
    f.write_text(json.dumps(minimal))
    import_labels(state, f, IDS)
    assert state.labels == {"img_1.jpg": 1} and state.ignored == []
    csv = tmp_path / "ls.csv"
    csv.write_text('"annotation_id","annotator","id","image","label","rank","sample_id"\n'
                   '3,"1",1,"/x","house",0,"img_3.jpg"\n'
                   '"","",2,"/x","",1,"img_4.jpg"\n')
    report = import_labels(state, csv, IDS)
    assert report.new == 1 and state.labels["img_3.jpg"] == 2 and "img_4.jpg" not in state.labels
    skip = tmp_path / "ours.csv"
    skip.write_text("sample_id,label,skipped\nimg_5.jpg,,true\nimg_6.jpg,,\n")
    assert import_labels(state, skip, IDS).skipped == ["img_5.jpg"]
    assert "img_6.jpg" not in state.ignored
