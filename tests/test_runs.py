"""Run directory state, queue files and label import (CSV and Label Studio)."""

import json

import pandas as pd
import pytest

from activevlm.runs import RunState, import_labels, write_queue

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
    paths = write_queue(tmp_path, _queue(["img_4.jpg", "img_5.jpg"]))
    pq = pd.read_parquet(paths["parquet"])
    csv = pd.read_csv(paths["csv"])
    assert list(pq.sample_id) == list(csv.sample_id) == ["img_4.jpg", "img_5.jpg"]
    tasks = json.loads(paths["labelstudio"].read_text())
    assert tasks[0]["data"]["sample_id"] == "img_4.jpg"
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["dog"]
    with pytest.raises(ValueError, match="score"):
        write_queue(tmp_path, _queue(["a"]).drop(columns="score"))


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


def test_label_studio_export_with_skipped_tasks(state, tmp_path):
    export = [
        {"data": {"sample_id": "img_7.jpg"},
         "annotations": [{"was_cancelled": False,
                          "result": [{"type": "choices", "value": {"choices": ["house"]}}]}]},
        {"data": {"sample_id": "img_8.jpg"},
         "annotations": [{"was_cancelled": True, "result": []}]},
        {"data": {"sample_id": "img_9.jpg"}, "annotations": []},
    ]
    f = tmp_path / "export.json"
    f.write_text(json.dumps(export))
    report = import_labels(state, f, IDS)
    assert state.labels == {"img_7.jpg": 2}
    assert sorted(report.skipped) == ["img_8.jpg", "img_9.jpg"]
    assert {"img_8.jpg", "img_9.jpg"} <= state.excluded()

    no_id = tmp_path / "noid.json"
    no_id.write_text(json.dumps([{"data": {"image": "x.jpg"}, "annotations": []}]))
    with pytest.raises(ValueError, match="sample_id"):
        import_labels(state, no_id, IDS)
