"""``state.json`` of a run directory: which items are labelled, queued or skipped."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from activevlm.runs.errors import RunError, RunNotFoundError
from activevlm.runs.rundir import RunDir
from activevlm.utils.io import atomic_write_json, read_json

STATE_FILE = RunDir(Path(".")).state.name
FORMAT_VERSION = 1


@dataclass
class RunState:
    """Everything a run needs to continue where it stopped.

    ``labels`` maps sample_id -> class index; ``queued`` maps sample_id -> the round that
    queued it (pending: not yet labelled); ``ignored`` holds items a labeller skipped.
    ``rounds`` has one record per completed selection round. ``pool`` is the absolute path
    of the pool directory; ``pool_checksum`` (:func:`activevlm.pool.sample_id_checksum`)
    lets the run be re-pointed to a moved copy of the same pool.
    """

    path: Path
    pool: str
    model_id: str
    classnames: list[str]
    labels: dict[str, int] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    pool_checksum: str | None = None

    def __post_init__(self) -> None:
        # resolved once, so the existence checks and the writes see the same folder (an
        # unresolved ``x/../run`` with ``x`` missing does not exist, yet a write's mkdir
        # would create ``x`` and overwrite ``run``)
        self.path = Path(self.path).resolve()

    @property
    def round(self) -> int:
        """Number of completed selection rounds (the next round's index)."""
        return len(self.rounds)

    def excluded(self) -> set[str]:
        """Sample ids that must never be queued again: labelled, queued or skipped."""
        return set(self.labels) | set(self.queued) | set(self.ignored)

    @property
    def dir(self) -> RunDir:
        """Every path of this run."""
        return RunDir(self.path)

    def round_dir(self, index: int) -> Path:
        return self.dir.round(index)

    @classmethod
    def create(cls, path: str | Path, pool: str, model_id: str, classnames: list[str],
               config: dict | None = None, pool_checksum: str | None = None) -> RunState:
        """A new, empty run at ``path`` (written immediately); ``pool`` is stored absolute."""
        path = Path(path).resolve()
        if (path / STATE_FILE).exists():
            raise FileExistsError(f"{path / STATE_FILE} already exists; open it with RunState.load")
        state = cls(path, str(Path(pool).absolute()), model_id, list(classnames),
                    config=dict(config or {}), pool_checksum=pool_checksum)
        state.save()
        return state

    @classmethod
    def load(cls, path: str | Path) -> RunState:
        """Read ``path/state.json``; a malformed file raises :class:`RunError` naming the
        field and value."""
        path = Path(path).resolve()
        file = path / STATE_FILE
        if not file.exists():
            raise RunNotFoundError(f"no run at {path}: {file} is missing")
        state = cls(path=path, **read_state_file(file))
        state._seen = _stamp(file)
        return state

    def reload(self) -> None:
        """Refresh every field from ``state.json`` if another writer replaced it since this
        object last read or wrote it (a run not saved yet, or unchanged on disk, keeps its
        fields, including changes not saved yet)."""
        file = self.path / STATE_FILE
        if file.exists() and _stamp(file) != getattr(self, "_seen", None):
            for name, value in read_state_file(file).items():
                setattr(self, name, value)
            self._seen = _stamp(file)

    @classmethod
    def open_or_create(cls, path: str | Path, pool: str, model_id: str,
                       classnames: list[str], config: dict | None = None,
                       pool_checksum: str | None = None) -> RunState:
        """Resume the run at ``path`` if there is one (checking it is for the same model)."""
        path = Path(path).resolve()
        if (path / STATE_FILE).exists():
            state = cls.load(path)
            if state.model_id != model_id:
                raise RunError(
                    f"run {path} was made for model {state.model_id!r}, "
                    f"but the pool is for {model_id!r}; use another --run directory"
                )
            return state
        return cls.create(path, pool, model_id, classnames, config, pool_checksum)

    def save(self) -> None:
        d = asdict(self)
        d.pop("path")
        atomic_write_json(self.dir.state, {"format_version": FORMAT_VERSION, **d})
        self._seen = _stamp(self.dir.state)


def _stamp(file: Path) -> tuple[int, int, int]:
    """Identity of one version of a file: atomic writes give each version a new inode."""
    st = file.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def read_state_file(file: Path) -> dict:
    """The fields of a ``state.json``, checked: types, label ids within the classes."""
    try:
        raw = read_json(file)
    except ValueError as e:
        raise RunError(str(e)) from e
    if not isinstance(raw, dict):
        raise RunError(f"{file}: expected a JSON object, found {type(raw).__name__}")
    version = raw.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise RunError(f"{file}: field 'format_version' is {version!r}, expected "
                       f"{FORMAT_VERSION}")
    known = {f.name for f in fields(RunState)} - {"path"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RunError(f"{file}: unknown field(s) {unknown}")
    missing = sorted({"pool", "model_id", "classnames"} - raw.keys())
    if missing:
        raise RunError(f"{file} lacks the field(s) {missing}")
    kinds = {"pool": str, "model_id": str, "classnames": list, "labels": dict, "queued": dict,
             "ignored": list, "rounds": list, "config": dict}
    for name, kind in kinds.items():
        if name in raw and not isinstance(raw[name], kind):
            raise RunError(f"{file}: field {name!r} must be a {kind.__name__}, got "
                           f"{raw[name]!r:.80}")
    n = len(raw["classnames"])
    for sid, y in raw.get("labels", {}).items():
        if not isinstance(y, int) or isinstance(y, bool) or not 0 <= y < n:
            raise RunError(f"{file}: field 'labels' gives {sid!r} the class id {y!r}, "
                           f"outside 0..{n - 1} ({n} classnames)")
    for sid, r in raw.get("queued", {}).items():
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise RunError(f"{file}: field 'queued' gives {sid!r} the round {r!r}, expected "
                           "an integer >= 0")
    if not all(isinstance(x, str) for x in raw.get("ignored", [])):
        raise RunError(f"{file}: field 'ignored' must list sample ids (strings)")
    if not all(isinstance(r, dict) for r in raw.get("rounds", [])):
        raise RunError(f"{file}: field 'rounds' must list one object per round")
    return raw
