"""The human loop against a real Label Studio server (the README's Label Studio section).

Label Studio (``requirements/labelstudio.txt``) lives in its own ``.venv-labelstudio``,
created by ``scripts/setup.sh``; the test starts it on 127.0.0.1 with a temporary data dir
and skips, saying why, only when it is not installed or does not start. Everything else
(queue, images, annotations, exports, import, finetune, next round) must work.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from activevlm.cli.main import app
from activevlm.demo.pool import demo_pool
from activevlm.runs import RunState
from activevlm.runs.queue import pool_image_root

LABEL_STUDIO = Path(__file__).resolve().parents[1] / ".venv-labelstudio" / "bin" / "label-studio"
TOKEN = "activevlm-test-token-0123456789"
START_TIMEOUT = 300  # first start migrates a fresh database: ~40 s on 2 loaded cores
BUDGET = 8
runner = CliRunner()


class Server:
    """A Label Studio REST client with the legacy token (``Authorization: Token ...``)."""

    def __init__(self, url: str):
        self.url = url

    def call(self, method: str, path: str, body=None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                payload = r.read()
                if raw:
                    return r.status, r.headers.get("Content-Type", ""), payload
                return json.loads(payload or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path} -> {e.code}: {e.read()[:2000]!r}") from e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pool():
    return demo_pool(n_per_class=20, progress=False)


@pytest.fixture(scope="module")
def label_studio(pool, tmp_path_factory):
    """A Label Studio server serving the pool's images from the default document root."""
    if not LABEL_STUDIO.is_file():
        pytest.skip(f"Label Studio is not installed at {LABEL_STUDIO} (scripts/setup.sh "
                    f"creates it)")
    data = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {**os.environ,
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(pool_image_root(pool).parent),
           "LABEL_STUDIO_BASE_DATA_DIR": str(data), "LATEST_VERSION_CHECK": "false"}
    log = open(data / "server.log", "wb")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen(
        [str(LABEL_STUDIO), "start", "--no-browser", "--data-dir", str(data),
         "--internal-host", "127.0.0.1", "--port", str(port), "--username", "admin@example.com",
         "--password", "activevlm-test", "--user-token", TOKEN, "--enable-legacy-api-token"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() - start > START_TIMEOUT:
                tail = (data / "server.log").read_text(errors="replace")[-1500:]
                pytest.skip(f"Label Studio did not start (exit code {proc.poll()}, "
                            f"{time.monotonic() - start:.0f} s); its log ends:\n{tail}")
            time.sleep(2)
        print(f"Label Studio up in {time.monotonic() - start:.1f} s")
        yield Server(url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _annotate(server, task_id: int, choice: str | None, user: int | None = None) -> None:
    """One annotation; ``choice`` None = the annotator pressed Skip (cancelled)."""
    body = {"was_cancelled": choice is None, "result": [] if choice is None else [{
        "from_name": "label", "to_name": "image", "type": "choices",
        "value": {"choices": [choice]}}]}
    if user is not None:
        body["completed_by"] = user
    server.call("POST", f"/api/tasks/{task_id}/annotations", body)


def _export(server, project: int, fmt: str, folder: Path) -> Path:
    _, _, payload = server.call(
        "GET", f"/api/projects/{project}/export?exportType={fmt}&download_all_tasks=true",
        raw=True)
    path = folder / f"export_{fmt.lower()}.{'csv' if fmt == 'CSV' else 'json'}"
    path.write_bytes(payload)
    return path


def _cli(*args: str) -> str:
    out = runner.invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())


@pytest.mark.slow
def test_label_studio_round_trip(pool, label_studio, tmp_path):
    run = tmp_path / "run"
    select = ["select", "--pool", str(pool.path), "--target", "clipart", "--budget",
              str(BUDGET), "--run", str(run), "--draws", "20", "--n-targets", "32",
              "--no-progress"]
    _cli(*select)
    round0 = run / "round_000"

    # the README's steps: a project with the written config, a Local Storage over the
    # pool's images, the queue's tasks imported
    server = label_studio
    project = server.call("POST", "/api/projects", {
        "title": "activevlm round 0",
        "label_config": (round0 / "labelstudio_config.xml").read_text()})["id"]
    server.call("POST", "/api/storages/localfiles", {
        "project": project, "title": "pool images", "path": str(pool_image_root(pool)),
        "use_blob_urls": False})
    imported = server.call("POST", f"/api/projects/{project}/import",
                           json.loads((round0 / "queue.labelstudio.json").read_text()))
    assert (imported["task_count"], imported["prediction_count"]) == (BUDGET, BUDGET)

    listed = server.call("GET", f"/api/tasks?project={project}&page_size=100")
    tasks = sorted(listed["tasks"] if isinstance(listed, dict) else listed,
                   key=lambda t: t["id"])
    assert [t["data"]["rank"] for t in tasks] == list(range(BUDGET))  # acquisition order
    queue = pd.read_parquet(round0 / "queue.parquet")
    for task, path in zip(tasks, queue["path"], strict=True):
        status, content_type, payload = server.call("GET", task["data"]["image"], raw=True)
        assert status == 200 and content_type.startswith("image/"), task["data"]["image"]
        assert payload == Path(path).read_bytes()

    # two annotators: a tie on task 1 (refused), a skip, an unannotated task, and labels
    second = server.call("POST", "/api/users/", {"email": "second@example.com",
                                                 "username": "second"})["id"]
    truth = pool.items.set_index("sample_id")["label"]
    name = {t["id"]: pool.classnames[truth[t["data"]["sample_id"]]] for t in tasks}
    wrong = {tid: pool.classnames[(pool.classnames.index(c) + 1) % len(pool.classnames)]
             for tid, c in name.items()}
    tie, skipped, unannotated = tasks[1]["id"], tasks[2]["id"], tasks[3]["id"]
    for task in tasks:
        tid = task["id"]
        if tid == skipped:
            _annotate(server, tid, None)
        elif tid != unannotated:
            _annotate(server, tid, name[tid])
    _annotate(server, tie, wrong[tie], user=second)
    _annotate(server, tasks[0]["id"], name[tasks[0]["id"]], user=second)  # agreeing

    sid = {t["id"]: t["data"]["sample_id"] for t in tasks}
    for fmt in ("JSON", "JSON_MIN", "CSV"):
        export = _export(server, project, fmt, tmp_path)
        out = runner.invoke(app, ["labels", "import", str(export), "--run", str(run)])
        assert out.exit_code == 1, (fmt, out.output)
        assert "1 item(s) have no majority" in " ".join(out.output.split())
        assert sid[tie] in out.output.replace("\n", "")
        assert "Traceback" not in out.output
    assert RunState.load(run).labels == {}  # nothing imported from a refused file

    # a third annotator breaks the tie for the right class
    third = server.call("POST", "/api/users/", {"email": "third@example.com",
                                                "username": "third"})["id"]
    _annotate(server, tie, name[tie], user=third)
    expected = {sid[t]: pool.classnames.index(name[t]) for t in sid
                if t not in (skipped, unannotated)}
    for fmt in ("JSON", "JSON_MIN", "CSV"):
        export = _export(server, project, fmt, tmp_path)
        text = _cli("labels", "import", str(export), "--run", str(run))
        state = RunState.load(run)
        assert state.labels == expected, fmt
        assert f"1 disagreement(s) resolved by majority: {sid[tie]}" in text, fmt
        assert state.queued == {sid[unannotated]: 0}, fmt  # not annotated: still queued
        assert state.ignored == [sid[skipped]], fmt  # skipped only where it was cancelled
        if fmt == "JSON":
            assert f"{BUDGET - 2} new" in text and "1 skipped" in text
        else:
            assert f"0 new, {BUDGET - 2} unchanged" in text and "0 skipped" in text

    text = _cli("finetune", "--run", str(run), "--epochs", "5", "--no-progress")
    assert f"fine-tuned on {BUDGET - 2} labels" in text
    assert (run / "head.json").is_file()

    refused = runner.invoke(app, select)
    assert refused.exit_code == 1 and "--force" in refused.output
    text = _cli(*select, "--force", "--no-predictions")
    assert "scoring with the run's fine-tuned head" in text
    nxt = pd.read_parquet(run / "round_001" / "queue.parquet")
    assert len(nxt) == BUDGET
    assert not set(nxt["sample_id"]) & (set(queue["sample_id"]))
    tasks1 = json.loads((run / "round_001" / "queue.labelstudio.json").read_text())
    assert all("predictions" not in t for t in tasks1)
