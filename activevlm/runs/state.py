"""``state.json`` of a run directory: which items are labelled, queued or skipped."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from activevlm.runs.rundir import RunDir
from activevlm.utils.io import atomic_write_json, read_json

STATE_FILE = RunDir(Path(".")).state.name
FORMAT_VERSION = 1


@dataclass
class RunState:
    """Everything a run needs to continue where it stopped.

    ``labels`` maps sample_id -> class index; ``queued`` maps sample_id -> the round that
    queued it (pending: not yet labelled); ``ignored`` holds items a labeller skipped.
    ``rounds`` has one record per completed selection round.
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
               config: dict | None = None) -> RunState:
        """A new, empty run at ``path`` (written immediately)."""
        path = Path(path)
        if (path / STATE_FILE).exists():
            raise FileExistsError(f"{path / STATE_FILE} already exists; open it with RunState.load")
        state = cls(path, str(pool), model_id, list(classnames), config=dict(config or {}))
        state.save()
        return state

    @classmethod
    def load(cls, path: str | Path) -> RunState:
        path = Path(path)
        file = path / STATE_FILE
        if not file.exists():
            raise FileNotFoundError(f"no run at {path}: {file} is missing")
        raw = read_json(file)
        version = raw.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"{file}: format_version {version!r}, expected {FORMAT_VERSION}")
        missing = {"pool", "model_id", "classnames"} - raw.keys()
        if missing:
            raise ValueError(f"{file} lacks the field(s) {sorted(missing)}")
        return cls(path=path, **raw)

    @classmethod
    def open_or_create(cls, path: str | Path, pool: str, model_id: str,
                       classnames: list[str], config: dict | None = None) -> RunState:
        """Resume the run at ``path`` if there is one (checking it is for the same model)."""
        if (Path(path) / STATE_FILE).exists():
            state = cls.load(path)
            if state.model_id != model_id:
                raise ValueError(
                    f"run {path} was made for model {state.model_id!r}, "
                    f"but the pool is for {model_id!r}; use another --run directory"
                )
            return state
        return cls.create(path, pool, model_id, classnames, config)

    def save(self) -> None:
        d = asdict(self)
        d.pop("path")
        atomic_write_json(self.dir.state, {"format_version": FORMAT_VERSION, **d})
