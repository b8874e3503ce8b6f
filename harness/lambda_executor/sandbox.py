"""A Lambda execution environment's sandbox, as strict as AWS's, from bubblewrap or from util-linux alone.

No LocalStack imports: `scones up` probes the machine with this module before LocalStack starts,
and the executor inside LocalStack builds each environment's command line with it.

Inside the sandbox (AWS's layout, https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html
and https://docs.aws.amazon.com/lambda/latest/dg/packaging-layers.html):
  /var/task     the function's code, read-only, the working directory (LAMBDA_TASK_ROOT)
  /var/runtime  the runtime (its venv: AWS's runtime interface client and boto3), read-only
  /opt          the function's layers merged in order, read-only (empty without layers)
  /tmp          writable, empty at the start, private to this environment, kept across warm invokes
  the rest      the machine's file system, read-only, with /root, /home, /run, the rest of /var and
                the project's state dir (LocalStack's data, other environments' /tmp) replaced by
                empty folders; its own PID namespace (/proc lists only the sandbox), IPC and UTS
The function runs as AWS runs it: uid 993 (sbx_user1051), gid 990, no supplementary groups, no
capabilities (effective, permitted, bounding: all empty) and no_new_privs, in a session of its own.
(uid/gid: `id` in a Lambda function prints "uid=993(sbx_user1051) gid=990 groups=990".)

Two ways to build it, with the same guarantees (tests/test_lambda_sandbox.py runs both):
- "bwrap": Debian's bubblewrap, where installed;
- "unshare": util-linux's `unshare`, `mount`, `pivot_root` and `setpriv`, which every Debian has
  (util-linux and mount are Essential): one `mount --all` over a generated fstab builds the root.
Not root, both use an unprivileged user namespace instead (uid 993 mapped onto the caller's uid).
Limits: the memory size through a memory cgroup (the kernel's OOM killer ends the sandbox, as on
AWS), the ephemeral storage size as the largest file the sandbox may write (RLIMIT_FSIZE: /tmp is
disk-backed so that its files do not count as memory, which they do not on AWS).

SCONES_LAMBDA_SANDBOX picks: unset or "auto" (bubblewrap where installed, else util-linux),
"bwrap", "unshare", or "off" (also "0", its old spelling; "1" still means "auto"): plain
processes, the user's explicit choice. Where the kernel refuses namespaces and the user did not say "off", `scones up` stops with
an error that says so (unavailable()), and the executor refuses to start an environment.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# settings.LAMBDA_SANDBOX, spelled out: this module imports nothing of scones, as it also runs on its own
# (tests/test_lambda_sandbox.py copies it alone); tests/test_settings.py checks that the two agree.
SWITCH = "SCONES_LAMBDA_SANDBOX"
CHOICES = ("auto", "bwrap", "unshare", "off")
OFF_SPELLINGS = ("off", "0")
ON_SPELLINGS = ("1", "on")
TASK_ROOT = "/var/task"
RUNTIME_ROOT = "/var/runtime"   # AWS's LAMBDA_RUNTIME_DIR
LAYERS_ROOT = "/opt"
SANDBOX_UID = 993   # sbx_user1051
SANDBOX_GID = 990
MiB = 1024 * 1024
# Replaced by empty read-only folders: on AWS they hold nothing of the function's, and here they
# hold the host's secrets (/root, /home), sockets (/run) and state (/var).
EMPTY_FOLDERS = ("/var", "/opt", "/root", "/home", "/run")
# The host's mounts the sandbox builds itself or never shows.
OWN_MOUNTS: tuple[str, ...] = ("/proc", "/sys", "/dev", "/tmp", *EMPTY_FOLDERS)
# Never hidden, whatever a setting says: a sandbox without them runs nothing.
SYSTEM_FOLDERS = ("/usr", "/etc", "/bin", "/lib")
DEVICES = ("null", "zero", "full", "random", "urandom")


class SandboxUnavailable(RuntimeError):
    """No sandbox can be built here and the user did not opt out."""


@dataclass(frozen=True)
class Capabilities:
    """What this machine lets the executor enforce, found once per process."""

    method: str | None           # "bwrap", "unshare", or None: plain processes
    tool: str | None             # the bwrap or unshare binary
    memory_cgroup: Path | None   # a writable cgroup folder for per-environment memory limits
    reason: str                  # why something is missing, for `scones up`
    opted_out: bool = False      # SCONES_LAMBDA_SANDBOX=off: plain processes are what the user asked for

    @property
    def isolated(self) -> bool:
        return self.method is not None

    def describe(self) -> str:
        if self.method is not None:
            tool = "bubblewrap" if self.method == "bwrap" else "util-linux unshare + setpriv"
            who = "uid 993" if os.geteuid() == 0 else "uid 993 in a user namespace"
            parts = [f"sandboxed ({tool}): {who}, no capabilities, private /tmp, read-only elsewhere, own PIDs"]
        else:
            parts = ["NO sandbox: environments share the machine's file system, each with its own TMPDIR"]
        parts.append(f"memory limits via {self.memory_cgroup}" if self.memory_cgroup
                     else "memory size NOT enforced (no writable memory cgroup)")
        return "; ".join(parts)


def requested() -> str:
    value = (os.environ.get(SWITCH) or "auto").strip().lower()
    if value in ON_SPELLINGS:   # the switch's old "on"
        return "auto"
    return "off" if value in OFF_SPELLINGS else value


@functools.cache
def capabilities() -> Capabilities:
    reasons = []
    choice = requested()
    method = tool = None
    if choice == "off":
        reasons.append(f"the sandbox is turned off ({SWITCH}={os.environ.get(SWITCH)})")
    elif choice not in CHOICES:
        reasons.append(f"{SWITCH}={os.environ.get(SWITCH)!r} is not one of {', '.join(CHOICES)} (or 0)")
    else:
        for candidate in (("bwrap", "unshare") if choice == "auto" else (choice,)):
            found = _tool(candidate, required=False) or None
            if found is None:
                reasons.append(f"{candidate} is not installed" + (" (Debian: apt-get install bubblewrap)"
                                                                   if candidate == "bwrap" else " (util-linux)"))
                continue
            problem = _probe(candidate, found)
            if problem is None:
                method, tool = candidate, found
                reasons = []
                break
            reasons.append(f"{candidate} cannot build a sandbox here: {problem}")
    cgroup = _memory_cgroup_root()
    if cgroup is None:
        reasons.append("no writable memory cgroup (cgroup v1 memory controller or cgroup v2 with memory)")
    return Capabilities(method=method, tool=tool, memory_cgroup=cgroup, reason="; ".join(reasons),
                        opted_out=choice == "off")


def unavailable() -> str | None:
    """Why `scones up` must stop (no sandbox, and the user did not opt out by name), or None."""
    caps = capabilities()
    if caps.isolated or caps.opted_out:
        return None
    return (f"Lambda functions cannot be sandboxed on this machine: {caps.reason}. On AWS a function "
            f"runs as an unprivileged user that sees only its own /tmp; without a sandbox it would run "
            f"as you, with your files. Install bubblewrap (Debian: apt-get install bubblewrap), allow user "
            f"namespaces (sysctl kernel.unprivileged_userns_clone=1), or run the functions unsandboxed "
            f"knowingly with {SWITCH}=off.")


def _probe(method: str, tool: str) -> str | None:
    """Build a real sandbox and run `true` in it: None when it works, else what went wrong."""
    with tempfile.TemporaryDirectory(prefix="scones-sandbox-probe-") as folder:
        base = Path(folder)
        (base / "code").mkdir()
        (base / "tmp").mkdir()
        layout = Layout(code_dir=base / "code", tmp_dir=base / "tmp", scratch_dir=base / "scratch")
        try:
            argv = _sandbox_argv(method, tool, layout, [_tool("true")])
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if result.returncode != 0:
            return (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0].strip()
    return None
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
            _reap_stale(root)
            # One folder per process that makes groups (a LocalStack, a test): a LocalStack killed
            # before it stopped its environments leaves empty groups, which the next one removes.
            mine = root / f"{OWNER_PREFIX}{os.getpid()}"
            mine.mkdir(exist_ok=True)
            if version == "v2":
                (mine / "cgroup.subtree_control").write_text("+memory")
            return mine
        except OSError:
            try:
                probe.rmdir()
            except OSError:
                pass
    return None


OWNER_PREFIX = "pid-"


def _reap_stale(root: Path) -> None:
    """Remove the groups of processes that are gone (the kernel refuses to remove one still in use)."""
    for owner in root.glob(f"{OWNER_PREFIX}*"):
        try:
            os.kill(int(owner.name.removeprefix(OWNER_PREFIX)), 0)
            continue   # alive: its groups are its own business
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        for group in [*(child for child in owner.iterdir() if child.is_dir()), owner]:
            try:
                group.rmdir()
            except OSError:
                pass


class KernelFile:
    """A /proc or cgroup file kept open; read() is its current content, with one pread (OSError once the process
    or group is gone).

    The executor reads a runtime's run-queue delay (/proc/<pid>/schedstat, charged_time.py) twice per invoke and
    its memory cgroup's peak once. Path.read_text makes about seven system calls (open, fstat, ioctl, reads,
    close) and each releases the GIL: with LocalStack's threads busy on 2 cores, every release can hand the GIL
    to another thread and wait to get it back. The kernel regenerates such a file at each read from offset 0,
    so one pread on a descriptor kept open reads it afresh (about 0.4 us against 8 us, and one release)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._lock = threading.Lock()   # a close() never lets a read use a descriptor number reused elsewhere

    def read(self, size: int = 4096) -> bytes:
        with self._lock:
            if self._fd is None:
                raise OSError(f"{self!r} is closed")
            return os.pread(self._fd, size, 0)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class MemoryCgroup:
    """One environment's memory cgroup: its limit, its peak and whether the OOM killer struck in it."""

    def __init__(self, path: Path):
        self.path = path
        self.v1 = (path.parent / "memory.limit_in_bytes").exists() or (path / "memory.limit_in_bytes").exists()
        self._peak: KernelFile | None = None   # read after every invoke: kept open

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
            if self._peak is None:
                self._peak = KernelFile(self.path / ("memory.max_usage_in_bytes" if self.v1 else "memory.peak"))
            return int(self._peak.read())
        except (OSError, ValueError):
            return None

    def reset_peak(self) -> None:
        if self.v1:
            try:
                (self.path / "memory.max_usage_in_bytes").write_text("0")
            except OSError:
                pass

    def remove(self, patience_s: float = 2.0) -> None:
        """Remove the group once its last process is reaped (a killed sandbox leaves it a moment later)."""
        if self._peak is not None:
            self._peak.close()
            self._peak = None
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:   # EBUSY: a process of it is still exiting
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.02)


# --- the command line ------------------------------------------------------------------------

def python_search_path(python_version: str) -> str:
    """PYTHONPATH of an environment: the layer folders AWS puts on the path, right after /var/task."""
    return f"{LAYERS_ROOT}/python/lib/python{python_version}/site-packages:{LAYERS_ROOT}/python"


def _under(path: str | Path, root: str | Path) -> bool:
    return Path(path) == Path(root) or Path(root) in Path(path).parents


@dataclass(frozen=True)
class Layout:
    """What one environment's sandbox shows, in host paths."""

    code_dir: Path
    tmp_dir: Path
    scratch_dir: Path                      # host folder for the sandbox's own files (fstab, empty folders)
    layers_dir: Path | None = None
    runtime_dir: Path | None = None        # the runtime's venv, shown at /var/runtime
    visible: tuple[Path, ...] = ()         # host folders the runtime needs at their own path (its base Python)
    hidden: tuple[Path, ...] = ()          # host folders shown empty (the state dir)

    def mounts(self) -> list[tuple[str, str | None, str]]:
        """(kind, host source, sandbox path) in mount order; kind is "rw", "ro" or "empty" (read-only)."""
        replaced: list[str | Path] = ["/tmp", *EMPTY_FOLDERS]
        ops: list[tuple[str, str | None, str]] = [("rw", str(self.tmp_dir), "/tmp")]
        ops += [("empty", None, folder) for folder in EMPTY_FOLDERS if not (folder == LAYERS_ROOT and self.layers_dir)]
        if self.layers_dir is not None:
            ops.append(("ro", str(self.layers_dir), LAYERS_ROOT))
        ops.append(("ro", str(self.code_dir), TASK_ROOT))
        if self.runtime_dir is not None:
            ops.append(("ro", str(self.runtime_dir), RUNTIME_ROOT))
        hidden = [folder.resolve() for folder in self.hidden if folder.exists()]
        hidden = [folder for folder in hidden if not any(_under(folder, root) for root in replaced)
                  and not any(_under(system, folder) for system in SYSTEM_FOLDERS)]
        hidden = [folder for folder in hidden if not any(_under(folder, outer) and folder != outer for outer in hidden)]
        ops += [("empty", None, str(folder)) for folder in dict.fromkeys(hidden)]
        for folder in (path.resolve() for path in self.visible):
            if _under(folder, "/tmp"):
                raise ValueError(f"{folder} (the Lambda runtime's Python) lies under /tmp, which the sandbox "
                                 "replaces with the function's own empty /tmp: install that Python elsewhere")
            if any(_under(folder, root) for root in [*replaced, *hidden]):
                ops.append(("ro", str(folder), str(folder)))
        return ops


def command(runtime_command: list[str], layout: Layout, *, ephemeral_bytes: int,
            cgroup: "MemoryCgroup | None") -> list[str]:
    """The argv that starts `runtime_command` inside a sandbox (a plain process when the user turned it off)."""
    caps = capabilities()
    argv: list[str] = []
    if cgroup is not None:
        # Join the cgroup before anything else runs, so every process of the sandbox is in it.
        argv += ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup.procs_file)]
    if _tool("prlimit", required=False):
        argv += [_tool("prlimit"), f"--fsize={ephemeral_bytes}", "--"]
    if caps.method is None or caps.tool is None:
        if not caps.opted_out:
            raise SandboxUnavailable(unavailable() or caps.reason)
        if _tool("setpriv", required=False):  # the runtime must not outlive LocalStack (sandboxes see to that)
            argv += [_tool("setpriv"), "--pdeathsig", "KILL", "--"]
        return argv + runtime_command
    return argv + _sandbox_argv(caps.method, caps.tool, layout, runtime_command)


def _drop_privileges() -> list[str]:
    """As root: become uid 993 with no capabilities at all, no way to regain any, and no parent-death escape.

    (setpriv sets the parent-death signal after the uid change, which would otherwise clear it.)
    """
    return [_tool("setpriv"), f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--pdeathsig=KILL", "--"]


def _sandbox_argv(method: str, tool: str, layout: Layout, runtime_command: list[str]) -> list[str]:
    if method == "bwrap":
        return _bwrap_argv(tool, layout, runtime_command)
    return _unshare_argv(tool, layout, runtime_command)


def _bwrap_argv(bwrap: str, layout: Layout, runtime_command: list[str]) -> list[str]:
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    empty: list[str] = []
    for kind, source, target in layout.mounts():
        if kind == "empty":
            argv += ["--tmpfs", target]
            empty.append(target)
            continue
        for folder in empty:
            # bubblewrap makes the folders leading to a mount point 0700, which uid 993 cannot cross
            if _under(target, folder) and target != folder:
                for parent in reversed(Path(target).relative_to(folder).parents[:-1]):
                    argv += ["--perms", "0755", "--dir", str(Path(folder) / parent)]
        argv += ["--bind" if kind == "rw" else "--ro-bind", str(source), target]
    for target in empty:  # after the mounts inside them: they need their mount points
        argv += ["--remount-ro", target]
    argv += ["--chdir", TASK_ROOT]
    if os.geteuid() == 0:
        # bubblewrap run by root keeps root's capabilities; it keeps only what setpriv needs to drop them.
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_SETPCAP", "--", *_drop_privileges()]
    else:
        argv += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--cap-drop", "ALL", "--"]
    return argv + runtime_command


# Run as PID 1 of the new PID namespace, in a mount namespace of its own: mount the fstab (one
# process for every mount), make the result the root, drop privileges, run the runtime as PID 2
# and exit with its status, 128 + the signal that ended it, as bubblewrap does. (util-linux 2.38's
# `unshare --fork` cannot pass on a SIGKILL: "sigprocmask unblock failed".)
# Its arguments: the fstab, the new root, then the tools by absolute path (the environment's PATH is
# the function's, which has no sbin), then the command.
_UNSHARE_SCRIPT = """set -e
"$3" --all --fstab "$1"
cd "$2"
"$4" . .
"$5" -l .
cd /var/task
setsid=$6
shift 6
"$setsid" "$@"
"""


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@functools.cache
def _find(name: str, path: str) -> str | None:
    return shutil.which(name, path=path)


def _tool(name: str, required: bool = True) -> str:
    """A tool's absolute path (LocalStack's PATH, then the system's: root's tools live in sbin)."""
    found = _find(name, f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")
    if found is None and required:
        raise SandboxUnavailable(f"{name} is not installed (Debian: util-linux)")
    return found or ""


def _fstab_path(path: str) -> str:
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


# Per-mount flags a bind mount keeps when it is made read-only: inside a user namespace (not root)
# the kernel refuses a remount that would drop them ("locked" flags).
KEPT_FLAGS = ("nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime", "strictatime")


def _mount_table() -> dict[str, tuple[str, ...]]:
    """{mount point: its per-mount flags worth keeping} from /proc/self/mountinfo (the last mount wins)."""
    table: dict[str, tuple[str, ...]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return table
    for line in lines:
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape") if "\\" in fields[4] else fields[4]
        table[point] = tuple(flag for flag in fields[5].split(",") if flag in KEPT_FLAGS)
    return table


def _bind_options(source: str, table: dict[str, tuple[str, ...]], writable: bool = False) -> str:
    """"bind,ro" plus the flags of the mount `source` lies on."""
    mount = max((point for point in table if _under(source, point)), key=len, default="/")
    return ",".join(("bind", *(() if writable else ("ro",)), *table.get(mount, ())))


def _unshare_argv(unshare: str, layout: Layout, runtime_command: list[str]) -> list[str]:
    """util-linux only: the same sandbox as bubblewrap's, from a generated fstab."""
    scratch = layout.scratch_dir
    root = scratch / "root"
    devices = scratch / "dev"
    for folder in (root, devices):
        folder.mkdir(parents=True, exist_ok=True)
    for name in DEVICES:
        (devices / name).touch()
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        if not (devices / name).is_symlink():
            (devices / name).symlink_to(target)
    mounts = layout.mounts()
    hidden = [path for kind, _, path in mounts if kind == "empty"]
    table = _mount_table()
    host_mounts = [point for point in table if point != "/" and not any(_under(point, own) for own in OWN_MOUNTS)
                   and not any(_under(point, folder) for folder in hidden)]
    # In a user namespace (not root) the kernel refuses a bind that would uncover what the host's
    # mounts cover ("locked" mounts): / and /sys come whole there (rbind: their submounts stay as
    # the host has them, DAC-protected, and the ones the sandbox shows are rebound read-only below).
    recursive = "r" if os.geteuid() != 0 else ""
    lines = [("/", "/", recursive + _bind_options("/", table)),
             *((point, point, _bind_options(point, table)) for point in host_mounts),
             ("/sys", "/sys", recursive + _bind_options("/sys", table)),
             ("proc", "/proc", "proc:nosuid,nodev,noexec"),
             (str(devices), "/dev", _bind_options(str(devices), table)),
             *((f"/dev/{name}", f"/dev/{name}", "bind") for name in DEVICES)]
    for index, (kind, source, target) in enumerate(mounts):
        if kind == "empty":
            # An empty read-only folder of our own, holding the mount points of what goes inside it.
            empty = scratch / "empty" / str(index)
            empty.mkdir(parents=True, exist_ok=True)
            for _, inner_source, inner in mounts[index + 1:]:
                if inner_source is not None and _under(inner, target) and inner != target:
                    point = empty / Path(inner).relative_to(target)
                    if Path(inner_source).is_dir():
                        point.mkdir(parents=True, exist_ok=True)
                    else:
                        point.parent.mkdir(parents=True, exist_ok=True)
                        point.touch()
            lines.append((str(empty), target, _bind_options(str(empty), table)))
        else:
            lines.append((str(source), target, _bind_options(str(source), table, writable=kind == "rw")))
    fstab = scratch / "fstab"
    text = ""
    for source, target, options in lines:
        fstype, _, options = options.rpartition(":") if ":" in options else ("none", "", options)
        text += f"{_fstab_path(source)} {_fstab_path(str(root) + target if target != '/' else str(root))} {fstype} {options} 0 0\n"
    partial = fstab.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(fstab)
    if os.geteuid() == 0:
        namespaces = [unshare, "--mount", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--propagation", "private"]
        final = _drop_privileges()
    else:
        # Root of a user namespace of our own for the mounts; then a nested one where we are uid 993.
        namespaces = [unshare, "--user", "--map-root-user", "--mount", "--pid", "--ipc", "--uts", "--fork",
                      "--kill-child", "--propagation", "private"]
        # (The bounding set stays: dropping it would forbid the nested mapping; uid 993 there has no
        # capability in any namespace and no_new_privs, so it can gain none.)
        final = [_tool("setpriv"), "--no-new-privs", "--pdeathsig=KILL", "--",
                 unshare, f"--map-user={SANDBOX_UID}", f"--map-group={SANDBOX_GID}", "--"]
    return [*namespaces, "--", "/bin/sh", "-c", _UNSHARE_SCRIPT, "scones-sandbox", str(fstab), str(root),
            *(_tool(name) for name in ("mount", "pivot_root", "umount", "setsid")),
            *final, *runtime_command]


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
