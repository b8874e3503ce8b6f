"""The record of the local SageMaker control plane's processes (harness/sagemaker/processes.py), which
`scones down` uses to stop endpoint servers and training jobs even when LocalStack is gone."""
from __future__ import annotations

import subprocess
import sys
import time

from scones.harness.sagemaker import processes

# A process whose command line names a host module, as endpoint_host / training_host do; it ignores nothing.
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)", "scones.harness.sagemaker.endpoint_host"]


def test_stop_all_stops_every_recorded_process_and_clears_the_records(tmp_path):
    process = subprocess.Popen(SLEEPER)
    try:
        entry = processes.ProcessRecord(kind="endpoint", name="e1", pid=process.pid, started=time.time(), log="x")
        processes.record(tmp_path, entry)
        assert [(e.name, e.alive) for e in processes.recorded(tmp_path)] == [("e1", True)]
        stopped = processes.stop_all(tmp_path, grace_s=10)
        assert [e.pid for e in stopped] == [process.pid]
        assert process.wait(10) == -15          # SIGTERM, not SIGKILL
        assert processes.recorded(tmp_path) == []
    finally:
        process.kill()


def test_a_reused_pid_is_not_ours(tmp_path):
    """A record whose pid now runs something else (pid reuse after a crash) is not alive and is never signalled."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        processes.record(tmp_path, processes.ProcessRecord(kind="training-job", name="j1", pid=other.pid,
                                                           started=time.time(), log="x"))
        assert not processes.recorded(tmp_path)[0].alive
        assert processes.stop_all(tmp_path, grace_s=1) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_spare_endpoint_host_ends_with_its_stdin(tmp_path):
    """A spare endpoint host (harness/sagemaker/endpoint_host.py --spare) waits on its stdin for an endpoint to
    serve; when the control plane that started it is gone (LocalStack killed: the pipe's end closes), it exits
    instead of lingering unrecorded."""
    spare = subprocess.Popen([sys.executable, "-m", "scones.harness.sagemaker.endpoint_host", "--spare"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        assert spare.stdin is not None
        spare.stdin.close()
        assert spare.wait(120) == 0
        assert spare.stdout is not None and spare.stdout.read() == b""
    finally:
        spare.kill()
        spare.wait()
