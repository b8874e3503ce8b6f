#!/usr/bin/env bash
# Fetch every wheel the compose images install into the build context, on the host: image
# builds reach no registry, so the Dockerfiles install with `pip install --no-index`.
#   docker/wheels/py311/  the project and its dependencies for Python 3.11 (Debian 12's python3),
#                         with this machine's CPU-only torch 2.13.0 (/opt/wheels) instead of the
#                         5.5 GB CUDA build, and the torchvision that pairs with it (0.28.0)
#   docker/wheels/py313/  LocalStack 4.14.0 (harness/localstack-requirements.txt), the Lambda
#                         runtime's boto3 (harness/lambda_runtime/requirements.txt) and tqdm
# A folder whose inputs did not change since its last fetch is kept; --force refetches.
#
#   harness/compose/fetch-wheels.sh [--force]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WHEELS="$ROOT/docker/wheels"
TORCH="${SCONES_COMPOSE_TORCH:-torch==2.13.0+cpu}"
TORCHVISION="${SCONES_COMPOSE_TORCHVISION:-torchvision==0.28.0}"
force=0
[ "${1:-}" = "--force" ] && force=1

python311="${SCONES_PYTHON311:-}"
[ -n "$python311" ] || python311="$(command -v python3.11 || true)"
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${SCONES_PYTHON311:-}" ] && python311="$ROOT/.venv/bin/python"
python313="${SCONES_PYTHON313:-}"
if [ -z "$python313" ]; then
    # pyenv's shim fails in subprocesses: find the real interpreter, as harness/localstack.py does.
    python313="$(cd "$ROOT" && PYTHONPATH="$ROOT" "$python311" -c 'from scones.harness.localstack import find_python313; print(find_python313())')"
fi
for python in "$python311" "$python313"; do
    [ -x "$python" ] || { echo "fetch-wheels.sh: interpreter '$python' not found (set SCONES_PYTHON311 / SCONES_PYTHON313)" >&2; exit 1; }
done

# fetch NAME PYTHON ARGS...: `pip wheel` into $WHEELS/NAME unless the stamp of ARGS and the
# requirement files is unchanged. pip wheel builds sdists into wheels on the host, so the
# image never compiles anything.
fetch() {
    local name="$1" python="$2"; shift 2
    local folder="$WHEELS/$name"
    local stamp
    stamp="$( { printf '%s\n' "$@"; cat "$ROOT/pyproject.toml" "$ROOT/harness/localstack-requirements.txt" \
        "$ROOT/harness/lambda_runtime/requirements.txt"; } | sha256sum | cut -d' ' -f1)"
    if [ "$force" = 0 ] && [ -f "$folder/.stamp" ] && [ "$(cat "$folder/.stamp")" = "$stamp" ]; then
        echo "wheels: $folder is up to date ($(ls "$folder"/*.whl | wc -l) wheels)"
        return
    fi
    rm -rf "$folder" && mkdir -p "$folder"
    echo "wheels: fetching for $name with $python"
    if ! nice -n 10 "$python" -m pip wheel --disable-pip-version-check --progress-bar off \
            --wheel-dir "$folder" "$@" > "$folder.log" 2>&1; then
        echo "fetch-wheels.sh: pip wheel for $name failed; last lines of $folder.log:" >&2
        tail -n 20 "$folder.log" >&2
        exit 1
    fi
    rm -f "$folder"/scones-*.whl    # the image installs the project from its source, not a snapshot
    echo "$stamp" > "$folder/.stamp"
    echo "wheels: $(ls "$folder"/*.whl | wc -l) wheels, $(du -sh "$folder" | cut -f1) in $folder"
}

fetch py311 "$python311" "$TORCH" "$TORCHVISION" "setuptools>=68" "$ROOT"
fetch py313 "$python313" -r "$ROOT/harness/localstack-requirements.txt" \
    -r "$ROOT/harness/lambda_runtime/requirements.txt" tqdm
