"""The sandbox each Lambda environment runs in (harness/lambda_executor/sandbox.py), run directly: no LocalStack.

Every test runs on both ways of building it: bubblewrap, and util-linux alone (`unshare` + `mount`
+ `setpriv`, what a machine set up only by the README's commands has), forced by
SCONES_LAMBDA_SANDBOX. .ci/run installs bubblewrap; without it the bubblewrap variants are skipped
and the util-linux ones still run. This machine class has a writable memory cgroup (cgroup v1).

What AWS shows (the sources):
- layout: code read-only at /var/task, layers merged at /opt, a private writable /tmp, nothing else
  writable: https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html,
  https://docs.aws.amazon.com/lambda/latest/dg/packaging-layers.html ("/tmp ... the only writable");
- the user: `id` in a Lambda function prints "uid=993(sbx_user1051) gid=990 groups=990" (as
  security write-ups of Lambda functions quote it), with no capabilities: mount(2) fails EPERM,
  /etc/shadow (mode 000 on Amazon Linux) fails EACCES;
- past its memory size the OOM killer ends the sandbox (Runtime.OutOfMemory).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from scones.harness.lambda_executor import sandbox
from scones.harness.lambda_executor.charged_time import runtime_pid
from support import poll

METHODS = ("bwrap", "unshare")
REPO = Path(__file__).resolve().parent.parent

PROBE = r'''
import json, os, sys
report = {"cwd": os.getcwd(), "pid": os.getpid()}
for path in ("/var/task/new.txt", "/usr/new.txt"):
    try:
        open(path, "w").write("x")
        report[path] = "written"
    except OSError as exc:
        report[path] = exc.strerror
open("/tmp/mine.txt", "w").write(sys.argv[1])
report["tmp"] = sorted(os.listdir("/tmp"))
report["opt"] = sorted(os.listdir("/opt"))
print(json.dumps(report))
'''

HOSTILE = r'''
import ctypes, json, os, sys
state_dir, other_tmp, host_pid = sys.argv[1], sys.argv[2], sys.argv[3]
report = {}

def attempt(name, action):
    try:
        action()
        report[name] = "succeeded"
    except OSError as exc:
        report[name] = exc.strerror

attempt("read /etc/shadow", lambda: open("/etc/shadow").read())
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND = 32, 4096
def remount():
    if libc.mount(b"none", b"/", None, MS_REMOUNT | MS_BIND, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
attempt("remount /", remount)
for path in ("/etc/scones-probe", "/root/scones-probe", "/usr/scones-probe", "/var/task/scones-probe",
             "/opt/scones-probe", "/var/scones-probe", "/home/scones-probe", "/dev/shm/scones-probe",
             os.path.join(state_dir, "scones-probe")):
    attempt("write " + path, lambda path=path: open(path, "w").write("x"))
attempt("list the state dir", lambda: os.listdir(state_dir))
attempt("list another sandbox's /tmp", lambda: os.listdir(other_tmp))
attempt("read the host process's environ", lambda: open("/proc/%s/environ" % host_pid, "rb").read())
report["proc"] = sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
report["pid"] = os.getpid()
report["tmp"] = os.listdir("/tmp")
report["root"] = os.listdir("/root")
report["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]
report["status"] = {line.split(":")[0]: line.split(":")[1].strip() for line in open("/proc/self/status")
                    if line.startswith(("Cap", "NoNewPrivs"))}
attempt("write /tmp", lambda: open("/tmp/mine", "w").write("x"))
print(json.dumps(report))
'''


@pytest.fixture(params=METHODS)
def method(request, monkeypatch):
    if request.param == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed here (.ci/run installs it); the util-linux variant runs")
    monkeypatch.setenv(sandbox.SWITCH, request.param)
    sandbox.capabilities.cache_clear()
    caps = sandbox.capabilities()
    assert caps.method == request.param, caps.reason
    yield request.param
    sandbox.capabilities.cache_clear()


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


# The probes need only the standard library: the base interpreter, wherever the clone and its venv are.
PYTHON = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")


def _python_prefixes() -> tuple[Path, ...]:
    return (Path(sys.base_prefix).resolve(),)


@pytest.fixture
def layout(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text(PROBE)
    (code / "hostile.py").write_text(HOSTILE)
    tmp_a, tmp_b = tmp_path / "tmp-a", tmp_path / "tmp-b"
    for folder in (tmp_a, tmp_b):
        folder.mkdir()
        folder.chmod(0o1777)
    return code, tmp_a, tmp_b


def _layout(code: Path, tmp: Path, layers: Path | None = None, hidden: tuple[Path, ...] = (),
            visible: tuple[Path, ...] = ()) -> sandbox.Layout:
    return sandbox.Layout(code_dir=code, tmp_dir=tmp, scratch_dir=tmp.with_name(tmp.name + "-scratch"),
                          layers_dir=layers, visible=visible or _python_prefixes(), hidden=hidden)


def _command(code: Path, tmp: Path, *args: str, layers: Path | None = None, cgroup=None,
             script: str = "/var/task/probe.py", hidden: tuple[Path, ...] = ()) -> list[str]:
    return sandbox.command([PYTHON, script, *args], _layout(code, tmp, layers, hidden),
                           ephemeral_bytes=512 * sandbox.MiB, cgroup=cgroup)


def test_this_machine_gives_a_sandbox_without_being_asked():
    """`auto`: bubblewrap where installed, else util-linux, which every Debian has."""
    sandbox.capabilities.cache_clear()
    try:
        caps = sandbox.capabilities()
        assert caps.isolated, caps.reason
        assert caps.method == ("bwrap" if shutil.which("bwrap") else "unshare")
        assert caps.memory_cgroup is not None, caps.reason
        assert sandbox.unavailable() is None
    finally:
        sandbox.capabilities.cache_clear()


def test_code_is_read_only_tmp_is_private_and_empty_and_opt_empty(method, layout):
    """The folders here live under pytest's /tmp: the sandbox's /tmp still holds only what it wrote."""
    code, tmp_a, tmp_b = layout
    first = json.loads(_run(_command(code, tmp_a, "first")).stdout)
    second = json.loads(_run(_command(code, tmp_b, "second")).stdout)
    assert first["cwd"] == "/var/task"
    assert first["/var/task/new.txt"] == "Read-only file system" and first["/usr/new.txt"] == "Read-only file system"
    assert first["tmp"] == ["mine.txt"] and second["tmp"] == ["mine.txt"]
    assert (tmp_a / "mine.txt").read_text() == "first" and (tmp_b / "mine.txt").read_text() == "second"
    assert first["opt"] == []  # the machine's own /opt is not the function's


def test_a_hostile_function_fails_each_step_as_on_aws(method, layout):
    code, tmp_a, tmp_b = layout
    (tmp_b / "secret.txt").write_text("another environment's file")
    # A state dir outside /tmp (inside the clone), and the one under /tmp that tests use.
    state_dir = Path(tempfile.mkdtemp(prefix=".scones-probe-state-", dir=REPO))
    try:
        (state_dir / "stack.json").write_text("{}")
        result = _run(_command(code, tmp_a, str(state_dir), str(tmp_b), str(os.getpid()),
                               script="/var/task/hostile.py", hidden=(state_dir,)))
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
    finally:
        shutil.rmtree(state_dir)
    assert report["read /etc/shadow"] == "Permission denied"
    assert report["remount /"] == "Operation not permitted"
    for path in ("/etc", "/root", "/usr", "/var/task", "/opt", "/var", "/home"):
        assert report[f"write {path}/scones-probe"] == "Read-only file system", path
    assert report["write /dev/shm/scones-probe"] in ("No such file or directory", "Permission denied")
    assert report[f"write {state_dir}/scones-probe"] in ("Read-only file system", "No such file or directory")
    assert report["list the state dir"] in ("succeeded", "No such file or directory")
    assert not (state_dir / "scones-probe").exists()
    assert report["list another sandbox's /tmp"] == "No such file or directory"
    assert report["read the host process's environ"] == "No such file or directory"
    assert report["write /tmp"] == "succeeded"
    assert report["tmp"] == []
    # Its own PID namespace: the sandbox's PID 1 (bubblewrap's or the shell that set it up) and itself.
    assert report["proc"] == [1, report["pid"]]
    assert report["root"] in ([], [".pyenv"], [".local"])   # at most the path to the runtime's own Python
    assert report["ids"] == [993, 993, 990, 990, []]
    status = report["status"]
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[name], 16) == 0, (name, status[name])
    assert status["NoNewPrivs"] == "1"


def test_a_hidden_state_dir_shows_empty(method, layout):
    """The project's state dir (stack record, LocalStack's data, other environments' /tmp): nothing of it."""
    code, tmp_a, _ = layout
    state_dir = Path(tempfile.mkdtemp(prefix=".scones-probe-state-", dir=REPO))
    try:
        (state_dir / "stack.json").write_text("{}")
        argv = sandbox.command([PYTHON, "-c", f"import os; print(os.listdir({str(state_dir)!r}))"],
                               _layout(code, tmp_a, hidden=(state_dir,)), ephemeral_bytes=512 * sandbox.MiB,
                               cgroup=None)
        result = _run(argv)
    finally:
        shutil.rmtree(state_dir)
    if str(state_dir).startswith("/tmp/"):   # a clone under /tmp: the private /tmp hides it already
        assert result.returncode != 0 and "FileNotFoundError" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[]"


def test_layers_merge_in_order_later_ones_win(method, layout, tmp_path):
    code, tmp_a, _ = layout
    one, two = tmp_path / "layer-one", tmp_path / "layer-two"
    (one / "python").mkdir(parents=True)
    (two / "python").mkdir(parents=True)
    (one / "python" / "shared.py").write_text("WHO = 'one'\n")
    (one / "python" / "only_one.py").write_text("")
    (two / "python" / "shared.py").write_text("WHO = 'two'\n")
    merged = sandbox.merge_layers([one, two], tmp_path / "merged")
    assert (merged / "python" / "shared.py").read_text() == "WHO = 'two'\n"
    assert (merged / "python" / "only_one.py").exists()
    assert (merged / "python" / "shared.py").stat().st_ino == (two / "python" / "shared.py").stat().st_ino
    assert json.loads(_run(_command(code, tmp_a, "x", layers=merged)).stdout)["opt"] == ["python"]


def test_past_its_memory_limit_a_sandbox_is_ended_by_the_oom_killer(method, layout):
    code, tmp_a, _ = layout
    (code / "hog.py").write_text("blocks = [bytearray(16 * 1024 * 1024) for _ in range(16)]\nprint('survived')\n")
    group = sandbox.MemoryCgroup.create(sandbox.capabilities().memory_cgroup, f"test-{method}-{uuid.uuid4().hex[:12]}",
                                        64 * sandbox.MiB)
    try:
        result = _run(_command(code, tmp_a, script="/var/task/hog.py", cgroup=group))
        assert "survived" not in result.stdout
        assert result.returncode == 128 + signal.SIGKILL   # both pass on the SIGKILL of their child as 128 + 9
        assert group.oom_kills() == 1
    finally:
        group.remove()


def test_memory_groups_left_by_a_killed_process_are_removed_by_the_next_one():
    """A LocalStack killed with -9 never stops its environments: their empty groups must not pile up."""
    own = sandbox.capabilities().memory_cgroup
    assert own is not None and own.name == f"pid-{os.getpid()}"
    dead = subprocess.Popen(["true"])
    dead.wait()   # its PID now belongs to no process
    stale = own.parent / f"pid-{dead.pid}"
    stale.mkdir()
    sandbox.MemoryCgroup.create(stale, "environment-of-a-killed-localstack", 64 * sandbox.MiB)
    assert (stale / "environment-of-a-killed-localstack").is_dir()
    sandbox.capabilities.cache_clear()
    try:
        assert sandbox.capabilities().memory_cgroup == own
        assert not stale.exists()
    finally:
        sandbox.capabilities.cache_clear()


def test_the_sandbox_does_not_outlive_the_process_that_started_it(method, layout):
    """LocalStack killed with -9 must not leave functions running: the runtime dies with its parent."""
    code, tmp_a, _ = layout
    argv = sandbox.command([PYTHON, "-c", "import time; time.sleep(600)", "scones-orphan-probe"],
                           _layout(code, tmp_a), ephemeral_bytes=512 * sandbox.MiB, cgroup=None)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        inner = poll(lambda: runtime_pid(process.pid, b"scones-orphan-probe"), timeout=30, interval=0.05,
                     what="the sandboxed process")
        process.kill()
        process.wait()
        poll(lambda: not Path(f"/proc/{inner}").exists() or _zombie(inner), timeout=30, interval=0.05,
             what=f"process {inner} to end after its parent")
    finally:
        if process.poll() is None:
            process.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_turned_off_by_name_environments_are_plain_processes_and_say_why(monkeypatch):
    for spelling in ("off", "0"):   # "0" is the switch's old spelling
        monkeypatch.setenv(sandbox.SWITCH, spelling)
        sandbox.capabilities.cache_clear()
        try:
            caps = sandbox.capabilities()
            assert not caps.isolated and caps.opted_out
            assert f"{sandbox.SWITCH}={spelling}" in caps.reason
            assert "NO sandbox" in caps.describe()
            assert sandbox.unavailable() is None   # the user's explicit choice: `scones up` goes on
            argv = sandbox.command(["python3", "-m", "awslambdaric", "app.handler"],
                                   _layout(Path("/code"), Path("/t")), ephemeral_bytes=1, cgroup=None)
            assert "bwrap" not in " ".join(argv) and "unshare" not in " ".join(argv)
            assert argv[-4:] == ["python3", "-m", "awslambdaric", "app.handler"]
        finally:
            sandbox.capabilities.cache_clear()


def test_where_no_sandbox_can_be_built_up_stops_and_names_the_way_out(monkeypatch, tmp_path):
    """A kernel that refuses namespaces, as some containers do: bubblewrap and util-linux's unshare both
    fail (here stand-ins, first on PATH, that fail with the messages those tools print there)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool, message in (("unshare", "unshare: unshare failed: Operation not permitted"),
                          ("bwrap", "bwrap: Creating new namespace failed: Operation not permitted")):
        (fake / tool).write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.delenv(sandbox.SWITCH, raising=False)
    sandbox.capabilities.cache_clear()
    try:
        message = sandbox.unavailable()
        assert message is not None
        assert "bwrap: Creating new namespace failed: Operation not permitted" in message
        assert "unshare failed: Operation not permitted" in message
        assert f"{sandbox.SWITCH}=off" in message
        with pytest.raises(sandbox.SandboxUnavailable):
            sandbox.command(["true"], _layout(tmp_path, tmp_path), ephemeral_bytes=1, cgroup=None)
    finally:
        sandbox.capabilities.cache_clear()


def test_the_old_on_spelling_still_means_the_default(monkeypatch):
    monkeypatch.setenv(sandbox.SWITCH, "1")
    assert sandbox.requested() == "auto"


def test_an_unknown_setting_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(sandbox.SWITCH, "sometimes")
    sandbox.capabilities.cache_clear()
    try:
        message = sandbox.unavailable()
        assert message is not None and "'sometimes' is not one of auto, bwrap, unshare, off" in message
    finally:
        sandbox.capabilities.cache_clear()


def test_the_runtime_folders_it_needs_are_shown_without_filling_its_tmp(method, layout, tmp_path):
    """A state dir under /tmp (the runtime venvs live there): the venv is shown at /var/runtime, and the
    sandbox's /tmp stays empty."""
    code, tmp_a, _ = layout
    runtime_dir = tmp_path / "state" / "lambda-runtimes" / "python3.X"
    runtime_dir.mkdir(parents=True)
    (runtime_dir / "marker.txt").write_text("the runtime")
    layout_ = sandbox.Layout(code_dir=code, tmp_dir=tmp_a, scratch_dir=tmp_path / "scratch", runtime_dir=runtime_dir,
                             visible=_python_prefixes(), hidden=(tmp_path / "state",))
    argv = sandbox.command([PYTHON, "-c", "import os; print(open('/var/runtime/marker.txt').read(), "
                            "os.listdir('/tmp'))"], layout_, ephemeral_bytes=512 * sandbox.MiB, cgroup=None)
    result = _run(argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the runtime []"


NOBODY = 65534
DRIVER = r'''
import json, os, subprocess, sys
from pathlib import Path
import sandbox
base = Path(sys.argv[1])
layout = sandbox.Layout(code_dir=base / "code", tmp_dir=base / "tmp", scratch_dir=base / "scratch",
                        visible=(Path(sys.base_prefix).resolve(),))
argv = sandbox.command([sys.executable, "/var/task/hostile.py", "/nonexistent", "/nonexistent", "1"], layout,
                       ephemeral_bytes=512 * sandbox.MiB, cgroup=None)
result = subprocess.run(argv, capture_output=True, text=True)
print(json.dumps({"method": sandbox.capabilities().method, "code": result.returncode, "stdout": result.stdout,
                  "stderr": result.stderr}))
'''


def _python_for_nobody() -> str | None:
    for candidate in ("/usr/bin/python3", sys.executable):
        if Path(candidate).exists() and subprocess.run(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", candidate, "-c", "pass"],
                capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="becomes another user to test the not-root path: needs root")
def test_not_root_the_sandbox_comes_from_a_user_namespace_with_the_same_guarantees(method):
    """A developer's laptop: scones run as an ordinary user. Both ways build the sandbox in an unprivileged
    user namespace; inside, uid 993 has no capability in any namespace and no_new_privs."""
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python here that an unprivileged user may run (CI's Debian has /usr/bin/python3)")
    base = Path(tempfile.mkdtemp(prefix="scones-sandbox-not-root-", dir="/tmp"))
    try:
        for folder in ("code", "tmp"):
            (base / folder).mkdir()
        (base / "code" / "hostile.py").write_text(HOSTILE)
        shutil.copy(Path(sandbox.__file__), base / "sandbox.py")   # standard library only: runs on its own
        (base / "driver.py").write_text(DRIVER)
        for path in (base, *base.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
        base.chmod(0o755)
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
             python, str(base / "driver.py"), str(base)],
            capture_output=True, text=True, timeout=120, cwd=base,
            env={"PATH": os.environ["PATH"], "HOME": str(base), sandbox.SWITCH: method})
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout)
        assert outcome["method"] == method
        assert outcome["code"] == 0, outcome["stderr"]
        report = json.loads(outcome["stdout"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert report["ids"][:4] == [993, 993, 990, 990]
    assert report["read /etc/shadow"] == "Permission denied"
    assert report["remount /"] == "Operation not permitted"
    for path in ("/etc", "/usr", "/var/task", "/opt", "/var", "/home"):
        assert report[f"write {path}/scones-probe"] == "Read-only file system", path
    assert report["write /tmp"] == "succeeded" and report["tmp"] == []
    assert report["proc"] == [1, report["pid"]]
    status = report["status"]
    for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[name], 16) == 0, (name, status[name])
    assert status["NoNewPrivs"] == "1"
