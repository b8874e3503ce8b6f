"""CPU per workflow execution, by process group, and executions/s at 1, 8 and 32 concurrent, with a same-run baseline.

    .venv/bin/python benchmarks/execution_cpu.py [--executions 60] [--concurrency 1,8,32] [--rounds 2]
        [--baseline-off SWITCH,...] [--profile DIR [--profile-format flamegraph|raw|speedscope]] [--keep-up]

What a workflow execution costs the machine, summed over every process of the local stack: CPU
seconds (user + system, from psutil) of each process before and after N executions at C concurrent,
divided by N, per group:
- localstack: LocalStack's own process (Step Functions, Lambda service, gateway, CloudWatch, Logs);
- sandboxes: its descendants, the Lambda execution environments (awslambdaric in a sandbox); an
  environment that ends during the run is counted from LocalStack's reaped-children times;
- endpoint: the SageMaker-compatible endpoint server and its children (the model);
- client: this process (start_execution, describe_execution polling as `scones run` polls,
  get_execution_history).
CPU seconds per execution are the robust figure on a shared machine: executions/s and latencies
move with whatever else runs (the load average is printed).

Same-run baseline: the stack is brought up alternately with the patches of issue 25 on (default)
and off (their switches, BASELINE_OFF, set to "0" at `scones up`; and the client polling from 10 ms
on as before, not paced by executions.DurationEstimate, unless --paced-baseline), --rounds times
each, and each figure is the median over rounds. `--baseline-off` names other switches to compare (e.g. every
pinned LocalStack patch: scones.harness.localstack.PATCH_SWITCHES).

Profile mode: `--profile DIR` runs py-spy (pip install py-spy) on LocalStack and its sandboxes,
sampling only threads that hold the GIL (Python's CPU, not threads waiting on I/O), during one run at the highest concurrency of the patched configuration and writes
DIR/localstack-<config>.svg (a flame graph; --profile-format raw writes collapsed stacks for
grep, speedscope a speedscope.app file); both configurations with --profile-both. py-spy stops the
process at each sample, which about doubles LocalStack's CPU in the profiled run: compare figures of
runs without --profile. On this kind of machine py-spy's GIL mode puts the event loop's thread far above
its share (it still counts as the GIL's holder while it waits in select), and its other modes count idle
threads as busy: `--threads` prints LocalStack's CPU by thread from the kernel's own per-thread times
instead (thread names from GET /_scones/threads), which is how issue 25's last patches were chosen.

Targets (issue 25): stack CPU per execution <= 50 ms; executions/s at 8 concurrent >= 2x the
baseline's; warm p50 of one execution no worse than the baseline's. Printed, never asserted.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import pick_key, scones  # noqa: E402

from scones import loopback, settings  # noqa: E402
from scones.harness import executions, stack  # noqa: E402
from scones.harness.executions import percentile, run_executions  # noqa: E402
from scones.harness.lambda_executor.names import THREADS_PATH  # noqa: E402
from scones.harness.targets import load_target  # noqa: E402

# The switches of issue 25's patches: "0" at LocalStack's start is the baseline.
BASELINE_OFF = settings.THROUGHPUT_SWITCHES
GROUPS = ("localstack", "sandboxes", "endpoint", "client")
WARM_UP_PER_SLOT = 12   # executions per concurrent slot in a warm-up batch before a level's window
WARM_UP_MAX = 120
WARM_UP_BATCHES = 4     # at most; warm-up ends after a batch that started no sandbox process
STACK_GROUPS = GROUPS[:3]


class _Unpaced(executions.DurationEstimate):
    """The baseline's client: polls from poll_interval on, as before issue 25 (learns nothing)."""

    def add(self, seconds: float) -> None:
        pass


@dataclass
class Snapshot:
    """CPU seconds of every stack process, keyed by (pid, start time) so a reused pid is not mistaken."""
    taken: float
    processes: dict[tuple[int, float], tuple[str, float]] = field(default_factory=dict)
    reaped_by_localstack: float = 0.0


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _tree(pid: int | None) -> list[psutil.Process]:
    if not pid:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def stack_pids(state_dir: Path) -> dict[str, int | None]:
    record = stack.status(state_dir)["record"] or {}
    return {name: (record.get(name) or {}).get("pid") for name in ("localstack", "endpoint")}


def localstack_url(state_dir: Path) -> str:
    return ((stack.status(state_dir)["record"] or {}).get("localstack") or {})["url"]


def snapshot(pids: dict[str, int | None]) -> Snapshot:
    taken = Snapshot(time.perf_counter())
    localstack = pids["localstack"]
    for group, root in (("localstack", localstack), ("endpoint", pids["endpoint"])):
        for process in _tree(root):
            name = "sandboxes" if group == "localstack" and process.pid != localstack else group
            try:
                taken.processes[(process.pid, process.create_time())] = (name, _cpu(process))
                if process.pid == localstack:
                    times = process.cpu_times()
                    taken.reaped_by_localstack = times.children_user + times.children_system
            except psutil.Error:
                pass
    me = psutil.Process()
    taken.processes[(me.pid, me.create_time())] = ("client", _cpu(me))
    return taken


def sandbox_processes(pids: dict[str, int | None]) -> set[tuple[int, float]]:
    return {key for key, (group, _) in snapshot(pids).processes.items() if group == "sandboxes"}


def cpu_by_group(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """Seconds of CPU each group used between the snapshots."""
    used = dict.fromkeys(GROUPS, 0.0)
    for key, (group, seconds) in after.processes.items():
        used[group] += seconds - before.processes.get(key, (group, 0.0))[1]
    ended = sum(seconds for key, (group, seconds) in before.processes.items()
                if group == "sandboxes" and key not in after.processes)
    # An environment that ended in between: LocalStack reaped it, and its whole life is in the reaped
    # children's times; what it had used before the first snapshot is not this run's.
    used["sandboxes"] += max(0.0, after.reaped_by_localstack - before.reaped_by_localstack - ended)
    return used


@dataclass
class Level:
    concurrency: int
    executions: int
    seconds: float
    cpu_s: dict[str, float]
    service_p50_s: float
    client_p50_s: float
    succeeded: int
    environments_started: int = 0
    describes: int = 0          # the client's describe_execution calls

    @property
    def per_second(self) -> float:
        return self.executions / self.seconds

    def cpu_ms(self, group: str) -> float:
        return 1000 * self.cpu_s[group] / self.executions

    @property
    def stack_ms(self) -> float:
        return sum(self.cpu_ms(group) for group in STACK_GROUPS)


class ThreadCpu:
    """LocalStack's CPU by thread, from the kernel's per-thread times (psutil) and LocalStack's own thread names
    (GET /_scones/threads): what each kind of thread costs, without a sampler's bias. Threads that started
    and ended inside the window (Step Functions runs each execution and each Task state on a thread of its
    own) show together as one line."""

    def __init__(self, pid: int, localstack_url: str) -> None:
        self.process = psutil.Process(pid)
        self.url = localstack_url
        self.before: dict[int, float] = {}
        self.total_before = 0.0

    def _times(self) -> dict[int, float]:
        return {thread.id: thread.user_time + thread.system_time for thread in self.process.threads()}

    def start(self) -> None:
        self.before, self.total_before = self._times(), _cpu(self.process)

    def stop(self, executions: int) -> list[tuple[str, float]]:
        after, total = self._times(), _cpu(self.process)
        names = loopback.get_json(f"{self.url}{THREADS_PATH}", timeout=10)
        by_kind: dict[str, float] = {}
        for thread_id, seconds in after.items():
            kind = re.sub(r"\d+", "N", names.get(str(thread_id), "(unnamed)"))
            by_kind[kind] = by_kind.get(kind, 0.0) + seconds - self.before.get(thread_id, 0.0)
        by_kind["threads that ended in the window"] = (total - self.total_before) - sum(by_kind.values())
        return sorted(((kind, 1000 * seconds / executions) for kind, seconds in by_kind.items()),
                      key=lambda item: -item[1])


class Profiler:
    """py-spy on LocalStack and its sandboxes, from start() to stop()."""

    def __init__(self, out: Path, fmt: str) -> None:
        self.out, self.fmt = out, fmt
        self.process: subprocess.Popen | None = None

    def start(self, pid: int) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses", "--gil",
                                         "--rate", "250", "--format", self.fmt, "--output", str(self.out)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches before the run starts; a fixed pause is fine outside tests

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        print(f"profile: {self.out}", file=sys.stderr)


def measure(label: str, env: dict[str, str], paced: bool, args, key: str | None, expected_error: str | None,
            profiler: Profiler | None, threads: bool = False) -> tuple[list[Level], str, str | None]:
    executions._estimates.clear()
    executions.duration_estimate = original_estimate if paced else (lambda arn: _Unpaced())
    scones("down")
    scones("up", env=env)
    state_dir = settings.state_dir()
    target = load_target("local", state_dir)
    if key is None:
        key, expected_error = pick_key(target, settings.data_dir())
    sfn = target.client("stepfunctions")
    describes = itertools.count()

    def count_describe(**_) -> None:   # a before-call hook that returns None lets the call go ahead
        next(describes)

    sfn.meta.events.register("before-call.sfn.DescribeExecution", count_describe)
    pids = stack_pids(state_dir)
    levels = []
    for concurrency in args.concurrency:
        # Warm: as many environments as this level needs, started before the window. The writeResult invokes
        # (asynchronous, from EventBridge) can outnumber the executions in flight, so one batch did not always
        # reach that number: 2 environments (6 processes) started inside a 200-execution window at 8 concurrent.
        for _ in range(WARM_UP_BATCHES):
            sandboxes = sandbox_processes(pids)
            run_executions(target, [key] * min(max(WARM_UP_PER_SLOT * concurrency, 10), WARM_UP_MAX),
                           concurrency=concurrency, client=sfn)
            if sandbox_processes(pids) <= sandboxes:
                break
        profile = profiler is not None and concurrency == max(args.concurrency)
        if profile:
            profiler.start(pids["localstack"])
        by_thread = ThreadCpu(pids["localstack"], localstack_url(state_dir)) if threads else None
        if by_thread:
            by_thread.start()
        before, described = snapshot(pids), next(describes)
        results = run_executions(target, [key] * args.executions, concurrency=concurrency, client=sfn)
        after, described = snapshot(pids), next(describes) - described - 1
        if profile:
            profiler.stop()
        if by_thread:
            print(f"LocalStack CPU ms/execution by thread, {label}, {concurrency} concurrent:")
            for kind, ms in by_thread.stop(args.executions):
                if ms >= 0.05:
                    print(f"  {ms:6.2f}  {kind}")
        levels.append(Level(concurrency, args.executions, after.taken - before.taken, cpu_by_group(before, after),
                            percentile([r.duration for r in results if r.duration is not None] or [0.0], 0.5),
                            percentile([r.wall_duration for r in results if r.wall_duration is not None] or [0.0], 0.5),
                            sum(r.error == expected_error and r.status != "NOT_STARTED" for r in results),
                            sum(group == "sandboxes" and key not in before.processes
                                for key, (group, _) in after.processes.items()), described))
        print(f"  {label}: {concurrency} concurrent: {levels[-1].per_second:.1f} exec/s, "
              f"stack {levels[-1].stack_ms:.0f} ms CPU/exec", file=sys.stderr)
    return levels, key, expected_error


original_estimate = executions.duration_estimate


def median_level(levels: list[Level]) -> Level:
    first = levels[0]
    return Level(first.concurrency, first.executions, statistics.median(level.seconds for level in levels),
                 {group: statistics.median(level.cpu_s[group] for level in levels) for group in GROUPS},
                 statistics.median(level.service_p50_s for level in levels),
                 statistics.median(level.client_p50_s for level in levels),
                 min(level.succeeded for level in levels), max(level.environments_started for level in levels),
                 round(statistics.median(level.describes for level in levels)))


def print_table(results: dict[str, list[Level]], args) -> None:
    configs = list(results)
    rows = [("measure", *configs)]
    for index, concurrency in enumerate(args.concurrency):
        levels = {name: results[name][index] for name in configs}
        rows.append((f"{concurrency} concurrent: executions/s", *(f"{levels[n].per_second:.1f}" for n in configs)))
        rows.append((f"{concurrency} concurrent: stack CPU ms/execution", *(f"{levels[n].stack_ms:.1f}" for n in configs)))
        for group in GROUPS:
            rows.append((f"  {group} CPU ms/execution", *(f"{levels[n].cpu_ms(group):.1f}" for n in configs)))
        rows.append((f"{concurrency} concurrent: p50 service / client ms",
                     *(f"{levels[n].service_p50_s * 1000:.0f} / {levels[n].client_p50_s * 1000:.0f}" for n in configs)))
        rows.append((f"{concurrency} concurrent: describe_execution calls/execution",
                     *(f"{levels[n].describes / levels[n].executions:.1f}" for n in configs)))
        rows.append((f"{concurrency} concurrent: as expected", *(f"{levels[n].succeeded}/{levels[n].executions}" for n in configs)))
        rows.append((f"{concurrency} concurrent: sandbox processes started", *(str(levels[n].environments_started) for n in configs)))
    load = os.getloadavg()
    rows.append(("load average (1/5/15 min)", " / ".join(f"{x:.1f}" for x in load), f"{os.cpu_count()} CPUs"))
    widths = [max(len(row[i]) if i < len(row) else 0 for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=60, help="executions per concurrency level (default 60)")
    parser.add_argument("--concurrency", type=lambda text: [int(x) for x in text.split(",")], default=[1, 8, 32],
                        help="comma-separated concurrency levels (default 1,8,32)")
    parser.add_argument("--rounds", type=int, default=2, help="times each configuration is brought up (default 2)")
    parser.add_argument("--baseline-off", type=lambda text: tuple(x for x in text.split(",") if x), default=BASELINE_OFF,
                        help=f"switches set to 0 for the baseline (default: {','.join(BASELINE_OFF)})")
    parser.add_argument("--no-baseline", action="store_true", help="measure the patched stack only")
    parser.add_argument("--paced-baseline", action="store_true",
                        help="the baseline's client paces its polls too (default: polls from 10 ms on, as before)")
    parser.add_argument("--profile", type=Path, help="write a py-spy profile of LocalStack into this folder")
    parser.add_argument("--profile-format", default="flamegraph", choices=("flamegraph", "raw", "speedscope"))
    parser.add_argument("--profile-both", action="store_true", help="profile the baseline too")
    parser.add_argument("--threads", action="store_true",
                        help="print LocalStack's CPU per execution by thread (first round, each level)")
    parser.add_argument("--keep-up", action="store_true", help="leave the (patched) stack running afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    patched_env = {key: value for key, value in os.environ.items() if key not in args.baseline_off}
    configs = {"patched": (patched_env, True)}
    if not args.no_baseline:
        configs["baseline"] = ({**patched_env, **dict.fromkeys(args.baseline_off, "0")}, args.paced_baseline)
    suffix = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[args.profile_format]
    runs: dict[str, list[list[Level]]] = {name: [] for name in configs}
    key = expected_error = None
    for round_index in range(args.rounds):
        # Alternate which goes first, so a change in the machine's load falls on both.
        order = list(configs) if round_index % 2 == 0 else list(reversed(configs))
        for name in order:
            profiler = None
            if args.profile and round_index == 0 and (name == "patched" or args.profile_both):
                profiler = Profiler(args.profile / f"localstack-{name}.{suffix}", args.profile_format)
            env, paced = configs[name]
            threads = args.threads and round_index == 0 and (name == "patched" or args.profile_both)
            levels, key, expected_error = measure(name, env, paced, args, key, expected_error, profiler, threads)
            runs[name].append(levels)
    results = {name: [median_level([run[i] for run in runs[name]]) for i in range(len(args.concurrency))]
               for name in configs}
    print(f"{args.executions} executions per level, median of {args.rounds} rounds; baseline: "
          f"{', '.join(f'{s}=0' for s in args.baseline_off)}"
          f"{', client polls from 10 ms on' if not args.paced_baseline else ''}")
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps({name: [vars(level) for level in levels] for name, levels in results.items()},
                                        indent=2) + "\n")
    scones("down")
    if args.keep_up:
        scones("up", env=patched_env)


if __name__ == "__main__":
    main()
