"""Labelling queues: Parquet and CSV tables, and a Label Studio project (config + tasks).

Label Studio serves the images itself from a *document root* on the same machine
(``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``,
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=ROOT``, plus a Local Storage of the project whose
path is ROOT or a folder above the images); a task's image URL is
``/data/local-files/?d=<image path relative to ROOT>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pandas as pd

from activevlm.utils.io import (
    atomic_write_csv,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
)

QUEUE_COLUMNS = ["rank", "sample_id", "path", "score", "predicted_label", "predicted_prob"]
# Names in the labelling config that tasks, predictions and exports refer to.
LS_FROM_NAME, LS_TO_NAME = "label", "image"
LS_CONFIG_FILE = "labelstudio_config.xml"
LS_TASKS_FILE = "queue.labelstudio.json"
LOCAL_FILES_URL = "/data/local-files/?d="


@dataclass(frozen=True)
class LabelStudioOptions:
    """How the Label Studio tasks of a queue are written.

    ``document_root``: the folder Label Studio serves local files from
    (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``); None = the parent of the pool's image root
    (:func:`default_document_root`).
    ``predictions``: attach the model's guess as a pre-annotation (off avoids anchoring
    annotators on the guesses of the very items the model gets wrong).
    """

    document_root: str | Path | None = None
    predictions: bool = True


def label_studio_config(classnames: list[str]) -> str:
    """The labelling config (XML) the tasks match: one image, one ``Choice`` per class."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classnames)
    return (f'<View>\n  <Image name="{LS_TO_NAME}" value="$image"/>\n'
            f'  <Choices name="{LS_FROM_NAME}" toName="{LS_TO_NAME}" choice="single" '
            f'showInLine="true">\n{choices}\n  </Choices>\n</View>\n')


def local_files_url(path: str | Path, document_root: str | Path) -> str:
    """``/data/local-files/?d=<path relative to document_root>`` (URL-quoted, posix)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(document_root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"image {path} is outside the Label Studio document root "
                         f"{document_root}; name a root above it (--labelstudio-root)")
    return LOCAL_FILES_URL + quote(Path(rel).as_posix())


def label_studio_tasks(queue: pd.DataFrame, document_root: str | Path,
                       predictions: bool = True) -> list[dict]:
    """Label Studio tasks (import format), in acquisition order.

    ``data`` holds ``image`` (a local-files URL), ``sample_id``, ``rank`` (0 = most wanted;
    importing in this order makes Label Studio's default sequential sampling follow it, and
    the Data Manager can sort by it) and ``score``. With ``predictions`` the model's guess is
    a pre-annotation whose score is the model's probability.
    """
    tasks = []
    for row in queue.itertuples(index=False):
        task = {"data": {"image": local_files_url(row.path, document_root),
                         "sample_id": row.sample_id, "rank": int(row.rank),
                         "score": float(row.score)}}
        if predictions:
            task["predictions"] = [{
                "model_version": "activevlm",
                "score": float(row.predicted_prob),
                "result": [{
                    "from_name": LS_FROM_NAME, "to_name": LS_TO_NAME, "type": "choices",
                    "value": {"choices": [row.predicted_label]},
                }],
            }]
        tasks.append(task)
    return tasks


def write_queue(folder: str | Path, queue: pd.DataFrame, classnames: list[str],
                document_root: str | Path, predictions: bool = True) -> dict[str, Path]:
    """Write ``queue.parquet``, ``queue.csv``, ``queue.labelstudio.json`` (tasks whose
    image URLs are relative to ``document_root``) and ``labelstudio_config.xml``.

    ``queue`` needs the columns of ``QUEUE_COLUMNS``, in rank order. Returns the written
    paths by kind.
    """
    missing = [c for c in QUEUE_COLUMNS if c not in queue.columns]
    if missing:
        raise ValueError(f"queue table lacks the column(s) {missing}")
    folder = Path(folder)
    queue = queue[QUEUE_COLUMNS].reset_index(drop=True)
    tasks = label_studio_tasks(queue, document_root, predictions)  # validates paths first
    paths = {
        "parquet": folder / "queue.parquet",
        "csv": folder / "queue.csv",
        "labelstudio": folder / LS_TASKS_FILE,
        "labelstudio_config": folder / LS_CONFIG_FILE,
    }
    atomic_write_parquet(paths["parquet"], queue)
    atomic_write_csv(paths["csv"], queue)
    atomic_write_json(paths["labelstudio"], tasks)
    atomic_write_text(paths["labelstudio_config"], label_studio_config(classnames))
    return paths


def pool_image_root(pool) -> Path:
    """The folder the pool's dataset was read from (its images lie below it)."""
    root = pool.manifest.get("dataset", {}).get("description", {}).get("root")
    if root is None:
        return Path(os.path.commonpath([os.path.dirname(p) for p in pool.items["path"]]))
    return Path(root)


def default_document_root(pool) -> Path:
    """The parent of the pool's image root: Label Studio refuses a Local Storage whose path is
    the document root itself, so the storage is the image root one level below it."""
    return pool_image_root(pool).parent
