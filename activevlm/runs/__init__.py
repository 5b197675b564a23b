"""Run directories: the state of one labelling campaign (rounds, labels, queues)."""

from activevlm.runs.labels import LabelImport, import_labels, read_label_file
from activevlm.runs.queue import write_queue
from activevlm.runs.state import RunState

__all__ = ["LabelImport", "RunState", "import_labels", "read_label_file", "write_queue"]
