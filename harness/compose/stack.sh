#!/usr/bin/env bash
# The compose stack in one command each way, run from anywhere in the checkout.
#
#   harness/compose/stack.sh up       base images and wheels if missing, build, start, deploy;
#                                     returns when the workflow is deployed (non-zero if not)
#   harness/compose/stack.sh prepare  base images, wheels and images only (what `up` builds first);
#                                     an `up` meanwhile waits for it instead of building beside it
#   harness/compose/stack.sh down     stop and remove the containers (capture flushed first)
#   harness/compose/stack.sh ps|logs  passed to docker compose
#
# Then, on the host: SCONES_STATE_DIR=${SCONES_COMPOSE_STATE_DIR:-.scones/compose} scones run <key>
# (and scones evaluate / monitor / report): the deploy service writes the stack record there.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PROJECT="${COMPOSE_PROJECT_NAME:-scones}"
DEPLOY_TIMEOUT_S="${SCONES_COMPOSE_DEPLOY_TIMEOUT_S:-1800}"
# Absolute, so that the stack record (which names the model folder) reads the same from anywhere.
export SCONES_COMPOSE_STATE_DIR="$(realpath -m "${SCONES_COMPOSE_STATE_DIR:-.scones/compose}")"
export SCONES_COMPOSE_MODEL_DIR="$(realpath -m "${SCONES_COMPOSE_MODEL_DIR:-$SCONES_COMPOSE_STATE_DIR/model}")"
export SCONES_DATA_DIR="$(realpath -m "${SCONES_DATA_DIR:-../shared/data}")"

if docker compose version >/dev/null 2>&1; then
    compose() { docker compose -p "$PROJECT" -f "$ROOT/docker-compose.yml" "$@"; }
elif command -v docker-compose >/dev/null; then
    compose() { docker-compose -p "$PROJECT" -f "$ROOT/docker-compose.yml" "$@"; }
else
    echo "stack.sh: neither 'docker compose' nor 'docker-compose' is installed (apt-get install docker-compose)" >&2
    exit 1
fi

need_docker() {
    docker info >/dev/null 2>&1 || { echo "stack.sh: no Docker daemon answers; harness/compose/dockerd.sh start" >&2; exit 1; }
}

# One at a time per checkout (a test session runs `prepare` in the background while `up` may start).
prepare() {
    exec 9>"$ROOT/docker/.prepare.lock"
    flock 9
    harness/compose/build-base.sh
    harness/compose/fetch-wheels.sh
    echo "compose: building images"
    nice -n 10 "$0" build
    exec 9>&-
}

case "${1:-}" in
    prepare)
        need_docker
        prepare
        ;;
    up)
        need_docker
        mkdir -p "$SCONES_COMPOSE_STATE_DIR" "$SCONES_COMPOSE_MODEL_DIR"
        prepare
        echo "compose: starting (train runs first when the model folder has no model.tar.gz)"
        compose up -d
        deploy="$(compose ps -q deploy)"
        [ -n "$deploy" ] || { echo "stack.sh: the deploy service was not started" >&2; compose ps >&2; exit 1; }
        status="$(timeout "$DEPLOY_TIMEOUT_S" docker wait "$deploy")" || status=timeout
        compose logs --no-color deploy | tr '\r' '\n' | grep -v -e '^ *$' -e '%|' | tail -n 12
        if [ "$status" != 0 ]; then
            echo "stack.sh: deploy did not succeed (exit status $status); \`$0 logs\` shows every service" >&2
            exit 1
        fi
        echo "compose: up. Try: .venv/bin/scones run test/bicycle/bicycle_s_000030.png (scones finds this stack by itself)"
        ;;
    build)
        compose build train localstack ;;
    down)
        compose down --remove-orphans --timeout 20
        rm -f "$SCONES_COMPOSE_STATE_DIR/local/stack.json"
        ;;
    ps|logs|config)
        command="$1"; shift; compose "$command" "$@" ;;
    *)
        echo "usage: $0 up|prepare|down|build|ps|logs|config" >&2; exit 2 ;;
esac
