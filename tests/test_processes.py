"""harness/processes.py and the ledger of harness/parts.py: knowing our processes again, and only ours."""
from __future__ import annotations

import os
import subprocess
import sys

from scones.harness import processes
from scones.harness.parts import Ledger
from scones.harness.processes import ProcessId


def sleeper(env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            env={**os.environ, **(env or {})})


def test_a_reused_pid_is_not_the_recorded_process():
    me = ProcessId.of(os.getpid())
    assert me is not None and me.running()
    assert not ProcessId(os.getpid(), me.started - 5.0).running()   # same pid, another start: another process
    assert ProcessId(os.getpid()).running()                         # an older record kept the pid only


def test_record_values_that_name_no_process_are_refused():
    for value in (None, "x", {}, {"pid": "12"}, {"pid": True}, {"pid": -1}, {"pid": 0}):
        assert ProcessId.from_dict(value) is None
    assert ProcessId.from_dict({"pid": 12, "started": "soon"}) == ProcessId(12, None)
    assert ProcessId.from_dict({"pid": 12, "started": 3.5}) == ProcessId(12, 3.5)


def test_the_marker_finds_a_stacks_processes_and_no_others(tmp_path):
    ours = sleeper(processes.marker_environment(tmp_path / "a", "endpoint"))
    theirs = sleeper(processes.marker_environment(tmp_path / "b", "endpoint"))
    unmarked = sleeper()
    try:
        found = processes.wait_until(lambda: processes.find_marked(tmp_path / "a").get("endpoint"), 20)
        assert found
        assert [process.pid for process in processes.find_marked(tmp_path / "a")["endpoint"]] == [ours.pid]
    finally:
        for child in (ours, theirs, unmarked):
            child.kill()
            child.wait()
    assert processes.find_marked(tmp_path / "a") == {}


def test_a_damaged_ledger_reads_as_empty_and_says_why(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.put("endpoint", {"pid": 123, "started": 1.0, "port": 8080})
    assert Ledger(tmp_path).process("endpoint") == ProcessId(123, 1.0)

    ledger.path.write_text('{"version": 1, "parts": {"endp')
    damaged = Ledger(tmp_path)
    assert damaged.parts == {} and "is not valid JSON" in (damaged.problem or "")

    ledger.path.write_text('{"version": 1, "parts": ["x"]}')
    assert Ledger(tmp_path).problem == f"{ledger.path} holds no parts"


def test_the_ledger_is_gone_once_its_last_part_is(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.put("endpoint", {"pid": 1})
    ledger.put("localstack", {"pid": 2})
    ledger.drop("endpoint")
    assert ledger.path.exists() and list(Ledger(tmp_path).parts) == ["localstack"]
    ledger.drop("localstack")
    assert not ledger.path.exists()
