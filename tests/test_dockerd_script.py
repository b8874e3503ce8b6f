"""harness/compose/dockerd.sh start: the daemon keeps none of the caller's open descriptors.

Issue 17 saw a lock file the caller held stay locked for as long as dockerd ran. Here stand-ins for
`dockerd` and `docker` (first on PATH) let the script run as in CI: the stand-in daemon lists what it
holds open, and `docker info` answers once it has.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "harness" / "compose" / "dockerd.sh"

FAKE_DOCKERD = """#!/bin/bash
while [ $# -gt 0 ]; do [ "$1" = --pidfile ] && pidfile="$2"; shift; done
echo $$ > "$pidfile"
ls -l /proc/$$/fd > "$FD_REPORT.partial"   # an external command: the redirection is ls's, not this shell's
mv "$FD_REPORT.partial" "$FD_REPORT"
exec sleep 120
"""
FAKE_DOCKER = """#!/bin/sh
[ "$1" = info ] && [ -f "$FD_REPORT" ]
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="dockerd.sh start refuses to run without root, as dockerd needs it")
def test_started_daemon_holds_none_of_the_callers_descriptors(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("dockerd", FAKE_DOCKERD), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    report = tmp_path / "fds"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FD_REPORT": str(report),
           "SCONES_DOCKERD_PIDFILE": str(tmp_path / "dockerd.pid"), "SCONES_DOCKERD_LOG": str(tmp_path / "log")}
    lock_path = tmp_path / "held.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = subprocess.run([str(SCRIPT), "start"], env=env, pass_fds=(lock.fileno(),),
                                 capture_output=True, text=True, timeout=60)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "dockerd: ready" in started.stdout
        held = dict(line.split()[-3::2] for line in report.read_text().splitlines() if " -> " in line)
        assert set(held) <= {"0", "1", "2", "255"}, held      # 255: bash's own copy of the script it runs
        assert str(lock_path) not in held.values()
        with open(lock_path) as again:                         # the lock went with the caller's descriptor
            fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        stopped = subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert "dockerd: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
