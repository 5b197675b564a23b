"""Import labels into a run: a CSV (sample_id,label) or a Label Studio JSON export.

The whole file is validated before anything is applied, so a bad file changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from activevlm.data.prompts import clean_classname
from activevlm.runs.state import RunState


@dataclass
class LabelImport:
    """What one import did. ``changed`` counts ids whose earlier label was replaced."""

    new: int = 0
    unchanged: int = 0
    changed: int = 0
    skipped: list[str] = field(default_factory=list)


def _read_csv(path: Path) -> tuple[dict[str, str], list[str]]:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV ({e})") from e
    missing = {"sample_id", "label"} - set(df.columns)
    if missing:
        raise ValueError(
            f"{path}: CSV needs the columns sample_id,label; missing {sorted(missing)}"
        )
    labelled = df[df["label"].str.strip() != ""]
    skipped = df.loc[df["label"].str.strip() == "", "sample_id"].tolist()
    dupes = labelled["sample_id"][labelled["sample_id"].duplicated()].unique().tolist()
    if dupes:
        raise ValueError(f"{path}: sample_id(s) listed twice: {dupes[:10]}")
    return dict(zip(labelled["sample_id"], labelled["label"].str.strip(), strict=True)), skipped


def _ls_choice(task: dict) -> str | None:
    """The chosen class of a Label Studio task, or None if it was skipped/unlabelled."""
    for ann in task.get("annotations") or []:
        if ann.get("was_cancelled"):
            continue
        for res in ann.get("result") or []:
            choices = (res.get("value") or {}).get("choices")
            if choices:
                return str(choices[0])
    return None


def _read_label_studio(path: Path) -> tuple[dict[str, str], list[str]]:
    try:
        tasks = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid Label Studio JSON export ({e})") from e
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: a Label Studio export is a JSON list of tasks")
    labels, skipped = {}, []
    for i, task in enumerate(tasks):
        sid = (task.get("data") or {}).get("sample_id")
        if sid is None:
            raise ValueError(
                f"{path}: task #{i} has no data.sample_id (was it queued by activevlm?)"
            )
        choice = _ls_choice(task)
        if choice is None:
            skipped.append(str(sid))
        else:
            labels[str(sid)] = choice
    return labels, skipped


def read_label_file(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """``({sample_id: raw label}, [skipped sample ids])`` from a .csv or a .json export."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"label file not found: {path}")
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    if path.suffix.lower() == ".json":
        return _read_label_studio(path)
    raise ValueError(f"{path}: unsupported label file type {path.suffix!r}; use .csv or .json")


def resolve_labels(raw: dict[str, str], classnames: list[str], source: str) -> dict[str, int]:
    """Map raw labels (class name, cleaned name or integer id) to class indices, or raise
    listing every unknown value."""
    lookup = {name: i for i, name in enumerate(classnames)}
    lookup.update({clean_classname(name): i for i, name in enumerate(classnames)})
    out, unknown = {}, set()
    for sid, value in raw.items():
        if value in lookup:
            out[sid] = lookup[value]
        elif value.lstrip("-").isdigit() and 0 <= int(value) < len(classnames):
            out[sid] = int(value)
        else:
            unknown.add(value)
    if unknown:
        raise ValueError(
            f"{source}: unknown class label(s) {sorted(unknown)[:20]}; expected one of the "
            f"{len(classnames)} class names (e.g. {classnames[:5]}) "
            f"or an id in 0..{len(classnames) - 1}"
        )
    return out


def import_labels(state: RunState, path: str | Path, known_ids: set[str]) -> LabelImport:
    """Validate ``path`` fully, then record its labels in ``state`` atomically.

    ``known_ids`` are the pool's sample ids; an id outside it is an error. Importing the same
    file twice changes nothing the second time. Skipped tasks are remembered as ignored (never
    queued again) unless they already have a label.
    """
    raw, skipped = read_label_file(path)
    unknown_ids = sorted((set(raw) | set(skipped)) - known_ids)
    if unknown_ids:
        raise ValueError(f"{path}: {len(unknown_ids)} sample_id(s) not in the pool, "
                         f"e.g. {unknown_ids[:10]}")
    labels = resolve_labels(raw, state.classnames, str(path))
    report = LabelImport()
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
