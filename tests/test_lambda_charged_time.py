"""The time an environment's init and invoke are charged (harness/lambda_executor/charged_time.py), on real processes.

On AWS each execution environment has its own CPU share (https://docs.aws.amazon.com/lambda/latest/dg/
configuration-memory.html: CPU is allocated in proportion to memory, per function instance), so
other functions' work never lengthens its init or its invoke. The rule here: wall time less the
run-queue delay the kernel reports for the runtime; sleeping and computing still count.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from scones.harness.lambda_executor import charged_time
from scones.harness.lambda_executor.charged_time import (
    ChargedClock,
    forget_ended,
    run_queue_delay_s,
    runtime_pid,
    wait_charged,
)
from scones.harness.lambda_executor.sandbox import KernelFile
from support import poll

SPIN = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); [None for _ in iter(int, 1)]"


@pytest.fixture
def one_cpu():
    cpu = min(os.sched_getaffinity(0))
    hogs = [subprocess.Popen([sys.executable, "-c", SPIN, str(cpu), "scones-hog"]) for _ in range(2)]
    yield cpu
    for hog in hogs:
        hog.kill()
        hog.wait()


def test_time_spent_queueing_for_a_cpu_behind_other_work_is_not_charged(one_cpu):
    """Three busy processes on one CPU: the one we time gets about a third of it and queues the rest."""
    target = subprocess.Popen([sys.executable, "-c", SPIN, str(one_cpu), "awslambdaric"])
    try:
        clock = ChargedClock(target.pid, new_process=True)
        poll(lambda: clock.queued() > 1.0, timeout=60, interval=0.05, what="the process to queue behind the others")
        wall, queued, charged = clock.wall(), clock.queued(), clock.charged()
        assert clock.runtime == target.pid
        assert charged <= wall - 1.0
        assert charged == pytest.approx(wall - queued, abs=0.2)
    finally:
        target.kill()
        target.wait()


def test_sleeping_counts_in_full_and_the_limit_ends_the_wait():
    """A handler that sleeps (or waits for I/O) is charged its wall time, as on AWS: it times out."""
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "awslambdaric"])
    try:
        poll(lambda: _state(target.pid) == "S", timeout=30, interval=0.02, what="the process to sleep")
        clock = ChargedClock(target.pid, new_process=False, runtime=target.pid)
        never = threading.Event()
        assert wait_charged(clock, 1.0, never.wait) is False
        assert clock.charged() >= 1.0
        assert clock.queued() < clock.wall() / 2   # asleep, it does not queue for a CPU
    finally:
        target.kill()
        target.wait()


def _state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def test_a_phase_that_finishes_in_time_returns_at_once():
    clock = ChargedClock(os.getpid(), new_process=False, runtime=os.getpid())
    done = threading.Event()
    done.set()
    assert wait_charged(clock, 5.0, done.wait) is True
    assert clock.wall() < 5.0


def test_the_runtime_is_found_below_the_sandbox_tools():
    # The marker is put together by the shell, so that only the runtime's command line holds it.
    shell = subprocess.Popen(["/bin/sh", "-c", 'm=awslambda; "$0" -c "import time; time.sleep(600)" "${m}ric"; :',
                              sys.executable])
    found = None
    try:
        found = poll(lambda: runtime_pid(shell.pid), timeout=30, interval=0.05, what="the runtime process")
        assert found != shell.pid
        assert b"awslambdaric" in open(f"/proc/{found}/cmdline", "rb").read()
        assert run_queue_delay_s(found) is not None
    finally:
        if found is not None:
            os.kill(found, 9)
        shell.kill()
        shell.wait()


def test_a_kept_open_schedstat_reads_afresh_and_is_let_go_when_its_process_ends():
    """proc(5): /proc/<pid>/schedstat's first field is the time spent on the CPU; the kernel writes the file anew at
    each read from its start, so one descriptor serves every invoke; once the process is gone a read fails (ESRCH)."""
    own = KernelFile(f"/proc/{os.getpid()}/schedstat")
    before = int(own.read().split()[0])
    sum(range(2_000_000))
    assert int(own.read().split()[0]) > before
    own.close()
    with pytest.raises(OSError):
        own.read()

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    assert run_queue_delay_s(child.pid) is not None and child.pid in charged_time._schedstats
    child.communicate(b"")
    forget_ended()
    assert child.pid not in charged_time._schedstats
    assert run_queue_delay_s(child.pid) is None and child.pid not in charged_time._schedstats
