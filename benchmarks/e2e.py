"""End-to-end figures of the local stack, with baselines measured in the same run.

    .venv/bin/python benchmarks/e2e.py [--executions 100] [--concurrency 8] [--poll-interval 0.002] [--keep-up]

Measures, on this machine:
- `scones up` with venvs and model ready: from nothing running to ready (cold), and again
  when everything is already up (attach);
- warm execution latency of the workflow over N sequential executions (p50/p95), as the
  service reports it (startDate -> stopDate) and as a client sees it (start -> result seen),
  with per-state durations from the execution history;
- throughput with C concurrent executions;
- memory (RSS) of the whole stack: LocalStack + Lambda environments + endpoint server.
Baselines, same LocalStack, same run: a three-Pass-state machine (the floor of Step Functions
itself) and a direct warm Lambda invoke (the floor of one Lambda hop).
Polling: executions are waited for with scones.harness.executions (first poll after --poll-interval,
2 ms by default as in the first figures, then 1.2x longer each time). Every describe_execution is
a request LocalStack serves on the same interpreter (one GIL, 2 cores here) as the execution it
describes, so fast polling slows what it measures a little: the workflow is also timed polled
as `scones run` polls (first poll after 10 ms) to show that observer cost in the same run.
Before/after: last, the stack is brought up again with our pinned LocalStack patches off
(harness/lambda_executor: sfn_client_cache, sfn_definition_cache, lambda_threads; see
scones.harness.localstack.PATCH_SWITCHES) and the workflow timed the same way (--no-patches-off skips
it). The executor itself is not switchable: `benchmarks/lambda_executor.py
--baseline-checkout DIR` compares it with an older executor in one run.
Targets (issue 5): up <= 10 s, warm p50 <= 100 ms. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scones import settings  # noqa: E402
from scones.harness import stack  # noqa: E402
from scones.harness.executions import percentile, run_executions  # noqa: E402
from scones.harness.localstack import PATCH_SWITCHES  # noqa: E402
from scones.harness.targets import load_target  # noqa: E402

CLI_POLL_S = inspect.signature(run_executions).parameters["poll_interval"].default  # as `scones run` polls
FAST_POLL_S = 0.002

PASS_MACHINE = {
    "Comment": "Baseline: three Pass states, no Lambda",
    "StartAt": "one",
    "States": {"one": {"Type": "Pass", "Next": "two"}, "two": {"Type": "Pass", "Next": "three"},
               "three": {"Type": "Pass", "End": True}},
}


def scones(*args: str, env: dict | None = None) -> float:
    """Run the scones CLI as a user would; return its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from scones.harness.cli import main; main()", *args], check=True, cwd=ROOT,
                   env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "mean": statistics.fmean(values),
            "n": len(values)}


def timed_calls(call, n: int) -> list[float]:
    durations = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return durations


def pick_key(target, data_dir: Path) -> tuple[str, str | None]:
    """A test image the model classifies above threshold, so every execution takes the success path.

    Returns (key, the error every execution is expected to end with): with a model too weak to
    be sure of any image, executions still run all three Lambdas and fail in filterInferences.
    """
    runtime = target.client("sagemaker-runtime")
    paths = sorted((data_dir / "test" / "bicycle").glob("*.png"))[:40]
    for path in paths:
        reply = runtime.invoke_endpoint(EndpointName=target.endpoint_name, ContentType="image/png",
                                        Body=path.read_bytes())
        if max(json.loads(reply["Body"].read())) >= target.record.get("threshold", 0.93):
            return f"test/bicycle/{path.name}", None
    print("note: the model is sure of none of 40 bicycle test images; timing executions that end in "
          "ThresholdConfidenceNotMet after all three Lambdas", file=sys.stderr)
    return f"test/bicycle/{paths[0].name}", "ThresholdConfidenceNotMet"


def pass_machine_arn(target) -> str:
    sfn = target.client("stepfunctions")
    name = "scones-bench-pass"
    for page in sfn.get_paginator("list_state_machines").paginate():
        for machine in page["stateMachines"]:
            if machine["name"] == name:
                return machine["stateMachineArn"]
    return sfn.create_state_machine(name=name, definition=json.dumps(PASS_MACHINE),
                                    roleArn="arn:aws:iam::000000000000:role/scones-states-role")["stateMachineArn"]


def memory(state_dir) -> dict[str, int]:
    record = stack.status(state_dir)["record"]
    parts: dict[str, int] = {}
    counted: set[int] = set()
    # The endpoint first: in api mode its host is a child of LocalStack's (and the spare host stays in LocalStack's).
    for name in ("endpoint", "localstack"):
        pid = (record.get(name) or {}).get("pid")
        tree = [p for p in (stack.process_tree([pid]) if stack.pid_alive(pid) else []) if p not in counted]
        counted.update(tree)
        parts[name] = stack.rss_bytes(tree)
        parts[f"{name}_processes"] = len(tree)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100, help="sequential executions to time (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent executions for throughput (default 8)")
    parser.add_argument("--skip-up", action="store_true", help="do not time `scones up` (use the stack that is up)")
    parser.add_argument("--keep-up", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--poll-interval", type=float, default=FAST_POLL_S,
                        help=f"first describe_execution poll interval in seconds (default {FAST_POLL_S})")
    parser.add_argument("--no-patches-off", action="store_true",
                        help="skip the last part: the workflow again with our LocalStack patches off")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    state_dir = settings.state_dir()
    data_dir = settings.data_dir()
    figures: dict[str, object] = {}

    if not args.skip_up:
        # Warm the venvs and the model first: the target is about starting, not installing or training.
        from scones.harness.localstack import LocalStack
        from scones.harness.models import ensure_model

        LocalStack(state_dir).ensure_venv()
        if not os.environ.get(settings.MODEL_DIR):  # else `scones up` serves that model
            ensure_model(data_dir=data_dir, state_dir=state_dir)
        scones("down")
        figures["up_cold_s"] = scones("up")
        figures["up_attach_s"] = scones("up")
    elif not stack.status(state_dir)["up"]:
        raise SystemExit("--skip-up needs a running stack: run `scones up` first")

    target = load_target("local", state_dir)
    sfn = target.client("stepfunctions")
    key, expected_error = pick_key(target, data_dir)

    # Baseline 1: Step Functions alone.
    pass_target = type("PassTarget", (), {"bucket": target.bucket, "state_machine_arn": pass_machine_arn(target)})()
    poll = args.poll_interval
    run_executions(pass_target, [key] * 5, client=sfn, poll_interval=poll)
    passes = run_executions(pass_target, [key] * args.executions, client=sfn, poll_interval=poll)
    figures["pass_machine"] = {"service": summary([r.duration for r in passes]),
                               "client": summary([r.wall_duration for r in passes])}

    # Baseline 2: one warm Lambda invoke, straight through the Lambda API.
    lam = target.client("lambda")
    payload = json.dumps({"statusCode": 200, "body": {"s3_bucket": target.bucket, "s3_key": key,
                                                      "image_data": "", "inferences": [0.99, 0.01]}})
    invoke = lambda: lam.invoke(FunctionName=target.function_arns["filterInferences"], Payload=payload)["Payload"].read()  # noqa: E731
    timed_calls(invoke, 5)
    figures["lambda_invoke"] = {"client": summary(timed_calls(invoke, args.executions))}

    # The workflow, warm, sequential.
    run_executions(target, [key] * 5, client=sfn, poll_interval=poll)
    results = run_executions(target, [key] * args.executions, client=sfn, poll_interval=poll)
    failed = [r for r in results if r.error != expected_error]
    if failed:
        raise SystemExit(f"{len(failed)} executions did not succeed, e.g. {failed[0].error}: {failed[0].error_message}")
    states = sorted({name for r in results for name in r.state_durations})
    figures["workflow"] = {
        "service": summary([r.duration for r in results]),
        "client": summary([r.wall_duration for r in results]),
        "states": {name: summary([r.state_durations[name] for r in results if name in r.state_durations])
                   for name in states},
        "poll_interval_s": poll,
    }
    # The same polled as `scones run` polls, to show what the observer costs (see the docstring).
    slow = run_executions(target, [key] * args.executions, client=sfn, poll_interval=CLI_POLL_S)
    figures["workflow_cli_poll"] = {"service": summary([r.duration for r in slow]),
                                    "client": summary([r.wall_duration for r in slow]), "poll_interval_s": CLI_POLL_S}

    # Throughput with concurrent executions.
    n = max(args.concurrency * 10, 40)
    started = time.perf_counter()
    concurrent = run_executions(target, [key] * n, concurrency=args.concurrency, client=sfn, poll_interval=0.01)
    elapsed = time.perf_counter() - started
    figures["throughput"] = {"concurrency": args.concurrency, "executions": n, "seconds": elapsed,
                             "per_second": n / elapsed,
                             "succeeded": sum(r.error == expected_error for r in concurrent),
                             "service": summary([r.duration for r in concurrent])}
    figures["memory"] = memory(state_dir)
    figures["load_average"] = list(os.getloadavg())
    figures["cpus"] = os.cpu_count()

    if not args.skip_up and not args.no_patches_off:
        # Before/after in the same run: the stack again with our pinned LocalStack patches off.
        scones("down")
        scones("up", env={**os.environ, **{switch: "0" for switch in PATCH_SWITCHES}})
        off_target = load_target("local", state_dir)
        off_sfn = off_target.client("stepfunctions")
        run_executions(off_target, [key] * 5, client=off_sfn, poll_interval=poll)
        off = run_executions(off_target, [key] * args.executions, client=off_sfn, poll_interval=poll)
        figures["workflow_patches_off"] = {"service": summary([r.duration for r in off]),
                                           "client": summary([r.wall_duration for r in off])}
        scones("down")
        if args.keep_up:
            scones("up")

    print_table(figures, args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not args.keep_up and not args.skip_up:
        scones("down")


def print_table(figures: dict, args) -> None:
    rows = [("measure", "value", "target / note")]
    if "up_cold_s" in figures:
        rows.append(("scones up, nothing running (venvs + model ready)", f"{figures['up_cold_s']:.2f} s", "<= 10 s"))
        rows.append(("scones up, already up (attach)", f"{figures['up_attach_s']:.2f} s", "starts nothing"))
    poll = figures["workflow"]["poll_interval_s"]
    for label, name in (("baseline: 3 Pass states", "pass_machine"), ("workflow (3 Lambda tasks)", "workflow"),
                        (f"workflow, polled from {CLI_POLL_S * 1000:.0f} ms as scones run", "workflow_cli_poll"),
                        ("workflow, our LocalStack patches off", "workflow_patches_off")):
        if name not in figures:
            continue
        for view in ("service", "client"):
            s = figures[name][view]
            note = f"p50 <= 100 ms (polls from {poll * 1000:.0f} ms)" if name == "workflow" and view == "service" else f"n={s['n']}"
            rows.append((f"{label}, {view} p50 / p95", f"{ms(s['p50'])} / {ms(s['p95'])}", note))
    s = figures["lambda_invoke"]["client"]
    rows.append(("baseline: direct warm Lambda invoke p50 / p95", f"{ms(s['p50'])} / {ms(s['p95'])}", f"n={s['n']}"))
    for name, s in figures["workflow"]["states"].items():
        rows.append((f"  state {name} p50 / p95", f"{ms(s['p50'])} / {ms(s['p95'])}", "from the history"))
    t = figures["throughput"]
    rows.append((f"throughput, {t['concurrency']} concurrent", f"{t['per_second']:.1f} exec/s",
                 f"{t['succeeded']}/{t['executions']} ok, p50 {ms(t['service']['p50'])}"))
    m = figures["memory"]
    total = m["localstack"] + m["endpoint"]
    rows.append(("memory (RSS), whole stack", f"{total / 2**20:.0f} MiB",
                 f"LocalStack+Lambdas {m['localstack'] / 2**20:.0f} MiB in {m['localstack_processes']} processes, "
                 f"endpoint {m['endpoint'] / 2**20:.0f} MiB"))
    load = figures["load_average"]
    rows.append(("machine load average (1/5/15 min)", " / ".join(f"{x:.1f}" for x in load),
                 f"{figures['cpus']} CPUs; figures scale with contention"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
