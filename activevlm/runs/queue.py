"""Labelling queues: Parquet and CSV tables and a Label Studio import file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from activevlm.utils.io import atomic_write_csv, atomic_write_json, atomic_write_parquet

QUEUE_COLUMNS = ["rank", "sample_id", "path", "score", "predicted_label", "predicted_prob"]

# The labelling config these tasks match (shown in the README):
#   <View><Image name="image" value="$image"/>
#   <Choices name="label" toName="image"> ... one <Choice value="CLASS"/> per class ...
#   </Choices></View>
LS_FROM_NAME, LS_TO_NAME = "label", "image"


def label_studio_tasks(queue: pd.DataFrame, image_url_prefix: str = "") -> list[dict]:
    """Label Studio tasks (import format) with the model's guess as a pre-annotation."""
    tasks = []
    for row in queue.itertuples(index=False):
        tasks.append({
            "data": {"image": f"{image_url_prefix}{row.path}", "sample_id": row.sample_id,
                     "score": float(row.score), "rank": int(row.rank)},
            "predictions": [{
                "model_version": "activevlm",
                "score": float(row.predicted_prob),
                "result": [{
                    "from_name": LS_FROM_NAME, "to_name": LS_TO_NAME, "type": "choices",
                    "value": {"choices": [row.predicted_label]},
                }],
            }],
        })
    return tasks


def write_queue(folder: str | Path, queue: pd.DataFrame, image_url_prefix: str = "") -> dict:
    """Write ``queue.parquet``, ``queue.csv`` and ``queue.labelstudio.json`` into ``folder``.

    ``queue`` needs the columns of ``QUEUE_COLUMNS``. Returns the written paths by kind.
    """
    missing = [c for c in QUEUE_COLUMNS if c not in queue.columns]
    if missing:
        raise ValueError(f"queue table lacks the column(s) {missing}")
    folder = Path(folder)
    queue = queue[QUEUE_COLUMNS].reset_index(drop=True)
    paths = {
        "parquet": folder / "queue.parquet",
        "csv": folder / "queue.csv",
        "labelstudio": folder / "queue.labelstudio.json",
    }
    atomic_write_parquet(paths["parquet"], queue)
    atomic_write_csv(paths["csv"], queue)
    atomic_write_json(paths["labelstudio"], label_studio_tasks(queue, image_url_prefix))
    return paths
