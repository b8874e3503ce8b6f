"""The sandbox each Lambda environment runs in (harness/lambda_executor/sandbox.py), run directly: no LocalStack.

AWS's layout (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html,
https://docs.aws.amazon.com/lambda/latest/dg/packaging-layers.html): the code read-only at
/var/task, layers merged in order at /opt, a private writable /tmp, an environment ended by the
OOM killer past its memory size. .ci/run installs bubblewrap; this machine class has a writable
memory cgroup (cgroup v1), so both are required here rather than skipped.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scones.harness.lambda_executor import sandbox

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


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture
def layout(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text(PROBE)
    tmp_a, tmp_b = tmp_path / "tmp-a", tmp_path / "tmp-b"
    tmp_a.mkdir()
    tmp_b.mkdir()
    return code, tmp_a, tmp_b


def _command(code: Path, tmp: Path, marker: str, layers: Path | None = None, cgroup=None) -> list[str]:
    return sandbox.command([sys.executable, "/var/task/probe.py", marker], code_dir=code, tmp_dir=tmp,
                           layers_dir=layers, ephemeral_bytes=512 * sandbox.MiB, cgroup=cgroup,
                           keep_visible=[Path(sys.prefix), Path(sys.base_prefix)])


def test_this_machine_gives_the_full_sandbox():
    caps = sandbox.capabilities()
    assert caps.isolated, caps.reason
    assert caps.memory_cgroup is not None, caps.reason


def test_code_is_read_only_tmp_is_private_and_opt_empty(layout):
    code, tmp_a, tmp_b = layout
    first = json.loads(_run(_command(code, tmp_a, "first")).stdout)
    second = json.loads(_run(_command(code, tmp_b, "second")).stdout)
    assert first["cwd"] == "/var/task"
    assert first["/var/task/new.txt"] == "Read-only file system" and first["/usr/new.txt"] == "Read-only file system"
    assert first["tmp"] == ["mine.txt"] and second["tmp"] == ["mine.txt"]
    assert (tmp_a / "mine.txt").read_text() == "first" and (tmp_b / "mine.txt").read_text() == "second"
    assert first["opt"] == []  # the machine's own /opt is not the function's


def test_layers_merge_in_order_later_ones_win(layout, tmp_path):
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


def test_past_its_memory_limit_a_sandbox_is_ended_by_the_oom_killer(layout):
    code, tmp_a, _ = layout
    (code / "hog.py").write_text("blocks = [bytearray(16 * 1024 * 1024) for _ in range(16)]\nprint('survived')\n")
    group = sandbox.MemoryCgroup.create(sandbox.capabilities().memory_cgroup, f"test-{tmp_a.name}-{id(code)}",
                                        64 * sandbox.MiB)
    try:
        argv = sandbox.command([sys.executable, "/var/task/hog.py"], code_dir=code, tmp_dir=tmp_a, layers_dir=None,
                               ephemeral_bytes=512 * sandbox.MiB, cgroup=group,
                               keep_visible=[Path(sys.prefix), Path(sys.base_prefix)])
        result = _run(argv)
        assert "survived" not in result.stdout
        assert result.returncode == 128 + 9  # bubblewrap passes on the SIGKILL of its child
        assert group.oom_kills() == 1
    finally:
        group.remove()


def test_without_bubblewrap_the_environment_is_a_plain_process_and_says_why(monkeypatch):
    monkeypatch.setenv(sandbox.SWITCH, "0")
    sandbox.capabilities.cache_clear()
    try:
        caps = sandbox.capabilities()
        assert not caps.isolated
        assert f"{sandbox.SWITCH}=0" in caps.reason
        assert "NO sandbox" in caps.describe()
        argv = sandbox.command(["python3", "-m", "awslambdaric", "app.handler"], code_dir=Path("/code"),
                               tmp_dir=Path("/t"), layers_dir=None, ephemeral_bytes=1, cgroup=None, keep_visible=[])
        assert "bwrap" not in " ".join(argv) and argv[-4:] == ["python3", "-m", "awslambdaric", "app.handler"]
    finally:
        sandbox.capabilities.cache_clear()


def test_host_folders_the_runtime_needs_stay_visible_under_the_sandboxes_own_tmp(layout, tmp_path):
    """A state dir under /tmp (the runtime venvs live there) must not vanish behind the private /tmp."""
    code, tmp_a, _ = layout
    runtime_dir = tmp_path / "state" / "lambda-runtimes"
    runtime_dir.mkdir(parents=True)
    (runtime_dir / "marker.txt").write_text("the runtime")
    assert str(runtime_dir).startswith("/tmp/")
    argv = sandbox.command([sys.executable, "-c", f"print(open({str(runtime_dir / 'marker.txt')!r}).read())"],
                           code_dir=code, tmp_dir=tmp_a, layers_dir=None, ephemeral_bytes=512 * sandbox.MiB,
                           cgroup=None, keep_visible=[runtime_dir, Path(sys.prefix), Path(sys.base_prefix)])
    result = _run(argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the runtime"
