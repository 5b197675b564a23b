#!/usr/bin/env bash
# Create ./.venv-labelstudio with Label Studio (pinned in requirements/labelstudio.txt) for
# the end-to-end labelling test. A separate environment: Label Studio's dependencies must not
# change the project's. Idempotent; a failure here only makes that test skip (with a reason).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=("$PY" -m uv); fi
[ -x .venv-labelstudio/bin/python ] || "${UV[@]}" venv --quiet --python "$PY" .venv-labelstudio
"${UV[@]}" pip install --quiet --python .venv-labelstudio/bin/python \
    -r requirements/labelstudio.txt
