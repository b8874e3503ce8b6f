"""A Lambda execution environment's sandbox as AWS lays it out, built from bubblewrap and a memory cgroup.

No LocalStack imports: `scones up` probes the machine with this module before LocalStack starts,
and the executor inside LocalStack builds each environment's command line with it.

Inside the sandbox (AWS's layout, https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html
and https://docs.aws.amazon.com/lambda/latest/dg/packaging-layers.html):
  /var/task   the function's code, read-only, the working directory (LAMBDA_TASK_ROOT)
  /opt        the function's layers merged in order, read-only (empty without layers)
  /tmp        writable, private to this environment, kept across warm invokes
  the rest    the machine's file system, read-only; its own PID namespace
Limits: the memory size through a memory cgroup (the kernel's OOM killer ends the sandbox, as on
AWS), the ephemeral storage size as the largest file the sandbox may write (RLIMIT_FSIZE: /tmp is
disk-backed so that its files do not count as memory, which they do not on AWS).
Where the kernel refuses namespaces (some containers) the environment runs as a plain process with
a private TMPDIR instead, and `scones up` says so once.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SWITCH = "SCONES_LAMBDA_SANDBOX"   # "0": run environments as plain processes (e.g. to compare)
TASK_ROOT = "/var/task"
LAYERS_ROOT = "/opt"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Capabilities:
    """What this machine lets the executor enforce, found once per process."""

    bwrap: str | None            # the bubblewrap binary, when it can make namespaces here
    memory_cgroup: Path | None   # a writable cgroup folder for per-environment memory limits
    reason: str                  # why something is missing, for the one warning at `scones up`

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    def describe(self) -> str:
        parts = ["private /tmp, read-only /var/task and /opt (bubblewrap)" if self.isolated
                 else "NO sandbox: environments share the machine's file system, each with its own TMPDIR"]
        parts.append(f"memory limits via {self.memory_cgroup}" if self.memory_cgroup
                     else "memory size NOT enforced (no writable memory cgroup)")
        return "; ".join(parts)


@functools.cache
def capabilities() -> Capabilities:
    reasons = []
    bwrap = shutil.which("bwrap")
    if os.environ.get(SWITCH) == "0":
        reasons.append(f"the sandbox is turned off ({SWITCH}=0)")
        bwrap = None
    elif bwrap is None:
        reasons.append("bubblewrap is not installed (Debian: apt-get install bubblewrap)")
    else:
        probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent", "true"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            reasons.append(f"bubblewrap cannot create namespaces here: {probe.stderr.strip() or probe.returncode}")
            bwrap = None
    cgroup = _memory_cgroup_root()
    if cgroup is None:
        reasons.append("no writable memory cgroup (cgroup v1 memory controller or cgroup v2 with memory)")
    return Capabilities(bwrap=bwrap, memory_cgroup=cgroup, reason="; ".join(reasons))


# --- memory cgroups --------------------------------------------------------------------------

def _own_cgroup_paths() -> dict[str, str]:
    """{controller list: path} from /proc/self/cgroup ("" is cgroup v2's unified entry)."""
    paths = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            paths[controllers] = path
    except (OSError, ValueError):
        pass
    return paths


def _candidates() -> list[tuple[Path, str]]:
    own = _own_cgroup_paths()
    found: list[tuple[Path, str]] = []
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        below = next((path for controllers, path in own.items() if "memory" in controllers.split(",")), "/")
        found += [(v1 / below.lstrip("/"), "v1"), (v1, "v1")]
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.controllers").read_text().split():
        found.append((v2 / own.get("", "/").lstrip("/"), "v2"))
    return found


def _memory_cgroup_root() -> Path | None:
    """A folder under which we may create one memory cgroup per environment (tried, not guessed)."""
    for base, version in _candidates():
        root = base / "scones-lambda"
        probe = root / f"probe-{os.getpid()}"
        try:
            root.mkdir(exist_ok=True)
            if version == "v2":
                (base / "cgroup.subtree_control").write_text("+memory")
                (root / "cgroup.subtree_control").write_text("+memory")
            probe.mkdir(exist_ok=True)
            MemoryCgroup(probe).set_limit(64 * MiB)
            probe.rmdir()
            return root
        except OSError:
            try:
                probe.rmdir()
            except OSError:
                pass
    return None


class MemoryCgroup:
    """One environment's memory cgroup: its limit, its peak and whether the OOM killer struck in it."""

    def __init__(self, path: Path):
        self.path = path
        self.v1 = (path.parent / "memory.limit_in_bytes").exists() or (path / "memory.limit_in_bytes").exists()

    @classmethod
    def create(cls, root: Path, name: str, limit_bytes: int) -> "MemoryCgroup":
        path = root / name
        path.mkdir(exist_ok=True)
        group = cls(path)
        group.set_limit(limit_bytes)
        return group

    def set_limit(self, limit_bytes: int) -> None:
        if self.v1:
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():  # no swapping past the limit: AWS's sandboxes have no swap
                swap.write_text(str(limit_bytes))
        else:
            (self.path / "memory.max").write_text(str(limit_bytes))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.v1 else "memory.events"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def peak_bytes(self) -> int | None:
        try:
            return int((self.path / ("memory.max_usage_in_bytes" if self.v1 else "memory.peak")).read_text())
        except (OSError, ValueError):
            return None

    def reset_peak(self) -> None:
        if self.v1:
            try:
                (self.path / "memory.max_usage_in_bytes").write_text("0")
            except OSError:
                pass

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:  # still has a process for a moment, or already gone
            pass


# --- the command line ------------------------------------------------------------------------

def python_search_path(python_version: str) -> str:
    """PYTHONPATH of an environment: the layer folders AWS puts on the path, right after /var/task."""
    return f"{LAYERS_ROOT}/python/lib/python{python_version}/site-packages:{LAYERS_ROOT}/python"


def _under(path: Path, root: str) -> bool:
    return path == Path(root) or Path(root) in path.parents


def command(runtime_command: list[str], *, code_dir: Path, tmp_dir: Path, layers_dir: Path | None,
            ephemeral_bytes: int, cgroup: MemoryCgroup | None, keep_visible: list[Path]) -> list[str]:
    """The argv that starts `runtime_command` inside a sandbox (or as a plain process without bubblewrap).

    keep_visible: host folders the runtime needs (its interpreter, its venv) that would otherwise be
    hidden under the sandbox's own /tmp, /var or /opt (a state dir under /tmp, say).
    """
    caps = capabilities()
    argv: list[str] = []
    if cgroup is not None:
        # Join the cgroup before anything else runs, so every process of the sandbox is in it.
        argv += ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup.procs_file)]
    if shutil.which("prlimit"):
        argv += ["prlimit", f"--fsize={ephemeral_bytes}", "--"]
    if caps.bwrap is None:
        if shutil.which("setpriv"):  # the runtime must not outlive LocalStack (bubblewrap sees to that itself)
            argv += ["setpriv", "--pdeathsig", "KILL", "--"]
        return argv + runtime_command
    argv += [caps.bwrap, "--die-with-parent", "--unshare-pid", "--ro-bind", "/", "/",
             "--dev", "/dev", "--proc", "/proc", "--bind", str(tmp_dir), "/tmp",
             "--tmpfs", "/var", "--ro-bind", str(code_dir), TASK_ROOT]
    argv += ["--ro-bind", str(layers_dir), LAYERS_ROOT] if layers_dir else ["--tmpfs", LAYERS_ROOT]
    for path in keep_visible:  # after the sandbox's own /tmp, /var and /opt, which would hide them
        if any(_under(path, root) for root in ("/tmp", "/var", LAYERS_ROOT)):
            argv += ["--ro-bind", str(path), str(path)]
    return argv + ["--chdir", TASK_ROOT, "--", *runtime_command]


def merge_layers(layer_dirs: list[Path], target: Path) -> Path:
    """The layers' files in one folder, later layers overriding earlier ones (as AWS merges /opt).

    Hard links where the file system allows (no copy of a large SDK per function), else copies.
    Built into a temporary sibling and renamed, so a crash never leaves a half-merged /opt.
    """
    if target.exists():
        return target
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for layer in layer_dirs:
        for source in sorted(layer.rglob("*")):
            destination = partial / source.relative_to(layer)
            if source.is_dir() and not source.is_symlink():
                destination.mkdir(exist_ok=True)
                continue
            if destination.exists() or destination.is_symlink():
                destination.unlink()
            if source.is_symlink():
                destination.symlink_to(os.readlink(source))
                continue
            try:
                os.link(source, destination)
            except OSError:
                shutil.copy2(source, destination)
    try:
        partial.rename(target)
    except OSError:  # another environment of the same version merged it first
        shutil.rmtree(partial, ignore_errors=True)
    return target
