#!/usr/bin/env bash
# Start or stop a Docker daemon for the compose stack on a machine without systemd.
# The daemon gets no bridge and no iptables rules: every Scones container uses the host's
# network and binds 127.0.0.1, so nothing else is needed. A daemon that already answers is used
# as it is; `stop` stops only the daemon this script started (its pidfile).
#
#   harness/compose/dockerd.sh start|stop|status
set -euo pipefail

PIDFILE="${SCONES_DOCKERD_PIDFILE:-/run/scones-dockerd.pid}"
LOG="${SCONES_DOCKERD_LOG:-/tmp/scones-dockerd.log}"

ours() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# The daemon outlives this script: it must not keep what the caller had open (a lock file it holds,
# the pipe a CI step reads to its end), so every descriptor above stderr is closed before the exec.
exec_daemon() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd="${fd##*/}"
        if [ "$fd" -gt 2 ] && [ -e /proc/"$BASHPID"/fd/"$fd" ]; then exec {fd}>&-; fi
    done
    exec setsid "$@"
}

case "${1:-}" in
    start)
        if docker info >/dev/null 2>&1; then echo "dockerd: already running"; exit 0; fi
        command -v dockerd >/dev/null || { echo "dockerd.sh: dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
        [ "$(id -u)" = 0 ] || { echo "dockerd.sh: dockerd needs root" >&2; exit 1; }
        (exec_daemon dockerd --bridge=none --iptables=false --ip6tables=false --pidfile "$PIDFILE") >"$LOG" 2>&1 < /dev/null &
        for _ in $(seq 150); do
            if docker info >/dev/null 2>&1; then echo "dockerd: ready (pid $(cat "$PIDFILE"), log $LOG)"; exit 0; fi
            sleep 0.2
        done
        echo "dockerd.sh: dockerd did not answer within 30 s; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        exit 1 ;;
    stop)
        if ! ours; then echo "dockerd: none started by this script"; exit 0; fi
        pid="$(cat "$PIDFILE")"
        kill -TERM "$pid"
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || { echo "dockerd: stopped"; exit 0; }; sleep 0.2; done
        echo "dockerd.sh: dockerd (pid $pid) still running 30 s after SIGTERM" >&2
        exit 1 ;;
    status)
        if docker info >/dev/null 2>&1; then echo "dockerd: running$(ours && echo " (pid $(cat "$PIDFILE"), ours)")"; else echo "dockerd: not running"; exit 3; fi ;;
    *)
        echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
