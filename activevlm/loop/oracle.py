"""The simulated oracle: answers a round's queue with the dataset's labels, through the same
label file import a person's answers go through."""

from __future__ import annotations

import pandas as pd

from activevlm.runs.labels import LabelImport, import_labels
from activevlm.runs.state import RunState
from activevlm.utils.io import atomic_write_csv

ORACLE_FILE = "oracle_labels.csv"


def answer_queue(pool, state: RunState, round_index: int) -> LabelImport:
    """Label every item of round ``round_index``'s queue from ``pool.items["label"]``.

    Writes ``round_NNN/oracle_labels.csv`` (sample_id,label with class names, in queue order)
    and imports it with :func:`activevlm.runs.import_labels`. Items without a dataset label
    are written as skipped (``skipped`` true), as a labeller would. Answering a round again
    (a resumed loop) writes the same file and changes no label. Without a queue file (items
    queued by hand in ``state``) the round's still-queued items are answered.
    """
    queue = state.dir.queue(round_index)
    pending = (pd.read_parquet(queue, columns=["sample_id"])["sample_id"].tolist()
               if queue.exists() else [s for s, r in state.queued.items() if r == round_index])
    items = pool.items.set_index("sample_id").loc[pending]
    labels = items["label"].to_numpy()
    table = pd.DataFrame({
        "sample_id": pending,
        "label": [pool.classnames[y] if y >= 0 else "" for y in labels],
        "skipped": labels < 0,
    })
    path = state.round_dir(round_index) / ORACLE_FILE
    atomic_write_csv(path, table)
    return import_labels(state, path, set(pending))
