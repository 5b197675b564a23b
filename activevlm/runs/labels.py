"""Import labels into a run from a CSV (ours or Label Studio's) or a Label Studio JSON /
JSON-MIN export.

Every format is first read into the same list of :class:`Annotation` (one annotator's
answer on one item) and then resolved by one rule:

- an item with at least one label gets the **majority** class of its labels (a class name,
  cleaned name or id all count as that class); a tie for the most votes is refused, listing
  the tied ids, and nothing is imported; items whose annotators disagreed are reported;
- an item whose only annotations were cancelled ("Skip" in Label Studio) is **skipped**: it
  is remembered and never queued again. Label Studio's JSON export records cancelled
  annotations; its JSON-MIN and CSV exports leave them out, so those mark nothing skipped;
  in our CSV a row with ``skipped`` true is a cancelled annotation;
- an item without any annotation (an unannotated task, an empty label cell) is not
  labelled and stays queued.

The whole file is validated before anything is applied, so a bad file changes nothing.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from activevlm.data.prompts import clean_classname
from activevlm.runs.errors import LabelFileError
from activevlm.runs.lock import writes_run
from activevlm.runs.state import RunState
from activevlm.utils.io import read_json


@dataclass(frozen=True)
class Annotation:
    """One answer on one item: ``label`` is the raw class (name or id), None if cancelled."""

    sample_id: str
    label: str | None
    annotator: str | None = None


@dataclass
class LabelImport:
    """What one import did. ``changed`` counts ids whose earlier label was replaced;
    ``disagreements`` maps ids whose annotators disagreed to the votes per class name."""

    new: int = 0
    unchanged: int = 0
    changed: int = 0
    skipped: list[str] = field(default_factory=list)
    disagreements: dict[str, dict[str, int]] = field(default_factory=dict)


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) \
        else str(value).strip()


def _read_csv(path: Path) -> list[Annotation]:
    """Our ``sample_id,label[,skipped]`` CSV or Label Studio's CSV export (one row per
    annotation, more columns); an empty label is an unannotated item unless ``skipped`` is
    true (1/yes), which marks a skip. Every row must have as many fields as the header."""
    check_csv_fields(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as e:
        raise LabelFileError(f"{path}: the file is empty; a label CSV needs the header "
                             "sample_id,label and one row per annotation") from e
    except pd.errors.ParserError as e:
        raise LabelFileError(f"{path}: not a readable CSV (unbalanced quotes?); a label CSV "
                             "has the header sample_id,label and one row per annotation") from e
    missing = {"sample_id", "label"} - set(df.columns)
    if missing:
        raise LabelFileError(f"{path}: CSV needs the columns sample_id,label (Label Studio's CSV "
                         f"export has them for tasks queued by activevlm); missing "
                         f"{sorted(missing)}")
    annotators = df["annotator"] if "annotator" in df else [None] * len(df)
    skipped = (df["skipped"].str.strip().str.lower().isin(["true", "1", "yes"])
               if "skipped" in df else [False] * len(df))
    out = []
    for sid, label, who, skip in zip(df["sample_id"].str.strip(), df["label"].str.strip(),
                                     annotators, skipped, strict=True):
        if label and skip:
            raise LabelFileError(f"{path}: {sid} has a label and skipped={skip}; give one")
        if label or skip:
            out.append(Annotation(sid, label or None, _text(who) or None))
    return out


def check_csv_fields(path: Path) -> None:
    """Raise :class:`LabelFileError` naming the line when a row has more or fewer fields
    than the header (a trailing comma shifts every column: pandas would silently take the
    first one as an index); blank lines are allowed."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            for row in reader:
                if row and len(row) != len(header):
                    extra = " (a trailing comma?)" if row[-1] == "" else ""
                    raise LabelFileError(
                        f"{path}: line {reader.line_num} has {len(row)} fields but the header "
                        f"{','.join(header)} has {len(header)}{extra}; give every row the "
                        "header's columns")
    except UnicodeDecodeError as e:
        raise LabelFileError(f"{path}: not a UTF-8 text file (byte {e.start} cannot be "
                             "read); a label CSV is UTF-8 text") from e
    except csv.Error as e:
        raise LabelFileError(f"{path}: not a readable CSV near line {reader.line_num}; a "
                             "label CSV has the header sample_id,label and one row per "
                             "annotation") from e


def _choice(result: list) -> str | None:
    """The chosen class in a Label Studio annotation result, or None."""
    for res in result or []:
        choices = (res.get("value") or {}).get("choices")
        if choices:
            return str(choices[0])
    return None


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value),
                                                                    type(value).__name__)


def check_task_structure(path: Path, i: int, task) -> None:
    """Raise :class:`LabelFileError` naming task ``i`` and the field if a Label Studio task
    does not have the structure of an export (objects and lists where they belong, and
    results of a ``<Choices>`` control)."""
    where = f"{path}: task #{i}"
    if not isinstance(task.get("data", {}), dict):
        raise LabelFileError(f"{where}: field 'data' is {_kind(task['data'])}, expected an "
                             "object with 'sample_id'")
    annotations = task.get("annotations")
    annotations = [] if annotations is None else annotations
    if not isinstance(annotations, list):
        raise LabelFileError(f"{where}: field 'annotations' is {_kind(annotations)}, expected "
                             "a list")
    for j, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise LabelFileError(f"{where}: annotations[{j}] is {_kind(ann)}, expected an "
                                 "object")
        results = ann.get("result")
        results = [] if results is None else results
        if not isinstance(results, list):
            raise LabelFileError(f"{where}: annotations[{j}].result is {_kind(results)}, "
                                 "expected a list")
        for k, res in enumerate(results):
            field_name = f"annotations[{j}].result[{k}]"
            value = res.get("value") if isinstance(res, dict) else None
            if not isinstance(value, dict):
                raise LabelFileError(f"{where}: {field_name}.value is {_kind(value)}, "
                                     "expected an object")
            if "choices" not in value:
                raise LabelFileError(
                    f"{where}: {field_name}.value has no 'choices' (it has "
                    f"{sorted(value)}); the labelling config must use a <Choices> control "
                    "with one <Choice> per class")
            if not isinstance(value["choices"], list) or not all(
                    isinstance(c, str | int) for c in value["choices"]):
                raise LabelFileError(f"{where}: {field_name}.value.choices is "
                                     f"{value['choices']!r:.60}, expected a list of class "
                                     "names")


def _from_full_json(path: Path, tasks: list) -> list[Annotation]:
    out = []
    for i, task in enumerate(tasks):
        check_task_structure(path, i, task)
        sid = (task.get("data") or {}).get("sample_id")
        if sid is None:
            raise LabelFileError(f"{path}: task #{i} has no data.sample_id (was it queued by "
                             f"activevlm?)")
        for ann in task.get("annotations") or []:
            who = _text(ann.get("completed_by")) or None
            if ann.get("was_cancelled"):
                out.append(Annotation(str(sid), None, who))
            elif (choice := _choice(ann.get("result"))) is not None:
                out.append(Annotation(str(sid), choice, who))
    return out


def _from_json_min(path: Path, records: list) -> list[Annotation]:
    out = []
    for i, rec in enumerate(records):
        if "sample_id" not in rec:
            raise LabelFileError(f"{path}: record #{i} of the JSON-MIN export has no sample_id "
                             f"(was it queued by activevlm?)")
        label = rec.get("label")
        if isinstance(label, dict):  # a choices value kept as a dict
            if not isinstance(label.get("choices"), list):
                raise LabelFileError(
                    f"{path}: record #{i} ({rec['sample_id']!r}): field 'label' is "
                    f"{json.dumps(label)[:60]}, an object without a 'choices' list; expected "
                    "a class name, a list of them or {\"choices\": [name]}")
            label = label["choices"]
        if isinstance(label, list):
            label = label[0] if label else None
        if isinstance(label, bool) or not isinstance(label, str | int | None):
            raise LabelFileError(f"{path}: record #{i} ({rec['sample_id']!r}): field 'label' "
                                 f"holds {json.dumps(label)[:60]}; expected a class name or id")
        if _text(label):
            out.append(Annotation(str(rec["sample_id"]), _text(label),
                                  _text(rec.get("annotator")) or None))
    return out


def _read_json(path: Path) -> list[Annotation]:
    try:
        records = read_json(path)
    except ValueError as e:
        raise LabelFileError(f"{e}; expected a Label Studio JSON or JSON-MIN export") from e
    if not isinstance(records, list):
        raise LabelFileError(f"{path}: a Label Studio export is a JSON list of tasks (JSON) or "
                             f"of flat records (JSON-MIN), found {_kind(records)}")
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise LabelFileError(f"{path}: task #{bad} is {_kind(records[bad])}, expected an object "
                             "(a task of a JSON export or a record of a JSON-MIN export)")
    if any("data" in r or "annotations" in r for r in records):
        return _from_full_json(path, records)
    return _from_json_min(path, records)


def read_annotations(path: str | Path) -> list[Annotation]:
    """Every annotation in a ``.csv`` or ``.json`` label file, unresolved."""
    path = Path(path).resolve()
    if not path.is_file():
        raise LabelFileError(f"label file not found: {path}")
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    if path.suffix.lower() == ".json":
        return _read_json(path)
    raise LabelFileError(f"{path}: unsupported label file type {path.suffix!r}; use a .csv "
                     f"(sample_id,label or Label Studio CSV) or a Label Studio .json export "
                     f"(JSON or JSON-MIN)")


def resolve_labels(raw: dict[str, str], classnames: list[str], source: str) -> dict[str, int]:
    """Map raw labels (class name, cleaned name or integer id) to class indices, or raise
    listing every unknown value."""
    lookup = {name: i for i, name in enumerate(classnames)}
    lookup.update({clean_classname(name): i for i, name in enumerate(classnames)})
    out, unknown = {}, set()
    for key, value in raw.items():
        if value in lookup:
            out[key] = lookup[value]
        elif value.lstrip("-").isdigit() and 0 <= int(value) < len(classnames):
            out[key] = int(value)
        else:
            unknown.add(value)
    if unknown:
        raise LabelFileError(
            f"{source}: unknown class label(s) {sorted(unknown)[:20]}; expected one of the "
            f"{len(classnames)} class names (e.g. {classnames[:5]}) "
            f"or an id in 0..{len(classnames) - 1}"
        )
    return out


def majority_labels(annotations: list[Annotation], classnames: list[str], source: str
                    ) -> tuple[dict[str, int], list[str], dict[str, dict[str, int]]]:
    """``(labels {id: class}, skipped ids, disagreements {id: {class name: votes}})`` by the
    module's rule; raises listing the ids whose most-voted classes tie."""
    values = {a.label for a in annotations if a.label is not None}
    class_of = resolve_labels({v: v for v in values}, classnames, source)
    votes: dict[str, Counter] = {}
    cancelled: set[str] = set()
    for a in annotations:
        if a.label is None:
            cancelled.add(a.sample_id)
        else:
            votes.setdefault(a.sample_id, Counter())[class_of[a.label]] += 1
    labels, disagreements, ties = {}, {}, []
    for sid, count in votes.items():
        (best, n), *rest = count.most_common()
        if rest and rest[0][1] == n:
            ties.append(sid)
        labels[sid] = best
        if rest:
            disagreements[sid] = {classnames[c]: k for c, k in count.most_common()}
    if ties:
        shown = {sid: disagreements[sid] for sid in sorted(ties)[:20]}
        raise LabelFileError(f"{source}: {len(ties)} item(s) have no majority label (annotators "
                         f"tie): {shown}; add an annotation to break each tie or delete the "
                         f"extra ones, then export again. Nothing was imported.")
    skipped = sorted(cancelled - set(labels))
    return labels, skipped, disagreements


@writes_run("state")  # one writer per run; reloads the state once the lock is held
def import_labels(state: RunState, path: str | Path, known_ids: set[str]) -> LabelImport:
    """Validate ``path`` fully, then record its labels in ``state`` atomically.

    ``known_ids`` are the pool's sample ids; an id outside it is an error. Importing the same
    file twice changes nothing the second time. Skipped items are remembered as ignored
    (never queued again) unless they already have a label. Holds the run's lock and reloads
    ``state`` from disk first, so concurrent imports and selections lose nothing.
    """
    annotations = read_annotations(path)
    unknown_ids = sorted({a.sample_id for a in annotations} - known_ids)
    if unknown_ids:
        raise LabelFileError(f"{path}: {len(unknown_ids)} sample_id(s) not in the pool, "
                         f"e.g. {unknown_ids[:10]}")
    labels, skipped, disagreements = majority_labels(annotations, state.classnames, str(path))
    report = LabelImport(disagreements=disagreements)
    for sid, y in labels.items():
        old = state.labels.get(sid)
        if old is None:
            report.new += 1
        elif old == y:
            report.unchanged += 1
        else:
            report.changed += 1
        state.labels[sid] = y
        state.queued.pop(sid, None)
    ignored = set(state.ignored)
    for sid in skipped:
        if sid not in state.labels:
            ignored.add(sid)
            state.queued.pop(sid, None)
            report.skipped.append(sid)
    state.ignored = sorted(ignored - set(state.labels))
    state.save()
    return report
