"""Latency of the process Lambda executor and of our Step Functions patches, measured in one run.

    .venv/bin/python benchmarks/lambda_executor.py [--runs 50] [--configs off,cache,memory,parse,default]
        [--baseline-checkout DIR]

For each configuration a fresh LocalStack starts on a free port (venvs under the state dir,
data in a temporary folder), gets one trivial function and two state machines (three Pass
states; three Lambda tasks), is warmed up, and then measures sequentially:
  - a direct warm Lambda invoke (boto3 round trip),
  - an execution of three Pass states (the Step Functions floor),
  - an execution of three Lambda tasks (what the Scones workflow does, minus its handlers),
from start_execution until describe_execution stops saying RUNNING (5 ms polling included),
and as the service reports it (startDate -> stopDate).
"off" is LocalStack's own behaviour (a new STS AssumeRole + boto client per task, internal
calls over the socket, the definition parsed at every execution) and is the baseline the
others are compared with; "cache" adds our pinned client cache (sfn_client_cache.py);
"memory" also sets LocalStack's IN_MEMORY_CLIENT=1; "parse" also parses each definition
once (sfn_definition_cache.py); "default" (what harness/localstack.py starts) also starts no
threads on the invoke path (lambda_threads.py). It also prints the
stack's memory (LocalStack + environments) and the machine's load average.
Every configuration runs today's executor (awslambdaric in a sandbox, a Runtime API per
environment); "executor share" shows what an invoke costs inside it, and "cold invoke" the first
invoke of each of --cold-starts new functions (an environment started for it).
To compare with an older executor in the same run, export that commit's harness/ and name it:
    git archive 2e212d5 harness | tar -x -C /tmp/scones-before
    .venv/bin/python benchmarks/lambda_executor.py --baseline-checkout /tmp/scones-before
adds the configuration "checkout": LocalStack with that folder first on its PYTHONPATH (so its
harness/ is the executor LocalStack loads) and its own defaults (IN_MEMORY_CLIENT=1; patches on).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scones import loopback  # noqa: E402
from scones.harness.endpoint import free_port  # noqa: E402
from scones.harness.lambda_executor.names import CLIENT_CACHE_ENV, DEFINITION_CACHE_ENV, THREADS_PATCH_ENV  # noqa: E402
from scones.harness.localstack import LocalStack  # noqa: E402
from scones.harness.processes import descendants, rss_bytes  # noqa: E402

ROLE = "arn:aws:iam::000000000000:role/scones-bench-role"
_PATCHES = (CLIENT_CACHE_ENV, "IN_MEMORY_CLIENT", DEFINITION_CACHE_ENV, THREADS_PATCH_ENV)
# Each configuration adds one step to the one before; "default" is what harness/localstack.py starts.
CONFIGS = {name: {key: "1" if index < steps else "0" for index, key in enumerate(_PATCHES)}
           for steps, name in enumerate(("off", "cache", "memory", "parse", "default"))}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _machine(arn: str | None, tasks: int) -> str:
    states = {}
    for index in range(tasks):
        state = ({"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                  "Parameters": {"FunctionName": arn, "Payload.$": "$"}, "OutputPath": "$.Payload"}
                 if arn else {"Type": "Pass"})
        state.update({"Next": f"S{index + 1}"} if index + 1 < tasks else {"End": True})
        states[f"S{index}"] = state
    return json.dumps({"StartAt": "S0", "States": states})


def _execute(sfn, machine: str, service: list[float] | None = None) -> float:
    started = time.perf_counter()
    arn = sfn.start_execution(stateMachineArn=machine, name=uuid.uuid4().hex, input='{"n": 1}')["executionArn"]
    while True:
        described = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            break
        time.sleep(0.005)
    elapsed = (time.perf_counter() - started) * 1000
    if described["status"] != "SUCCEEDED":
        raise RuntimeError(f"benchmark execution {arn} ended {described['status']}: {described.get('cause')}")
    if service is not None:
        service.append((described["stopDate"] - described["startDate"]).total_seconds() * 1000)
    return elapsed


def measure(config: str, runs: int, warmup: int, cold_starts: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="scones-bench-") as home:
        instance = LocalStack(port=free_port(), home=home, extra_env=CONFIGS[config])
        instance.ensure_venv(progress=True)
        started = time.perf_counter()
        pid = instance.start()
        try:
            instance.wait_ready(timeout=120)
            ready_s = time.perf_counter() - started
            session = boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
            lambda_client = session.client("lambda", endpoint_url=instance.url)
            sfn = session.client("stepfunctions", endpoint_url=instance.url)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("echo.py", "def handler(event, context):\n    return event\n")
            arn = lambda_client.create_function(FunctionName="bench-echo", Runtime="python3.12", Role=ROLE,
                                                Handler="echo.handler", Code={"ZipFile": buffer.getvalue()})["FunctionArn"]
            lambda_client.get_waiter("function_active_v2").wait(FunctionName="bench-echo", WaiterConfig={"Delay": 0.2})
            passes = sfn.create_state_machine(name="bench-pass", definition=_machine(None, 3), roleArn=ROLE)["stateMachineArn"]
            tasks = sfn.create_state_machine(name="bench-lambda", definition=_machine(arn, 3), roleArn=ROLE)["stateMachineArn"]

            cold_ms = []
            for index in range(cold_starts):  # a new function each: its first invoke starts an environment
                name = f"bench-cold-{index}"
                lambda_client.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE,
                                              Handler="echo.handler", Code={"ZipFile": buffer.getvalue()})
                lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
                cold = time.perf_counter()
                lambda_client.invoke(FunctionName=name, Payload=b"{}")
                cold_ms.append((time.perf_counter() - cold) * 1000)
            lambda_client.invoke(FunctionName="bench-echo", Payload=b"{}")
            for _ in range(warmup):
                lambda_client.invoke(FunctionName="bench-echo", Payload=b"{}")
                _execute(sfn, passes)
                _execute(sfn, tasks)
            invoke_ms = []
            for _ in range(runs):
                began = time.perf_counter()
                lambda_client.invoke(FunctionName="bench-echo", Payload=b"{}")
                invoke_ms.append((time.perf_counter() - began) * 1000)
            pass_ms = [_execute(sfn, passes) for _ in range(runs)]
            task_service_ms: list[float] = []
            task_ms = [_execute(sfn, tasks, task_service_ms) for _ in range(runs)]
            memory = rss_bytes([pid, *descendants(pid)]) / 2**20
            executor_stats = loopback.get_json(f"{instance.url}/_scones/executor")
        finally:
            instance.stop()
    return {"config": config, "ready_s": ready_s, "cold": cold_ms, "invoke": invoke_ms,
            "pass3": pass_ms, "lambda3": task_ms, "lambda3_service": task_service_ms, "memory_mb": memory,
            "load": os.getloadavg()[0],
            "executor_p50_ms": executor_stats["recent_invoke_ms"]["p50"],
            "init_p50_ms": (executor_stats.get("cold_start_ms") or {}).get("p50")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cold-starts", type=int, default=10, help="new functions, each invoked once (default 10)")
    parser.add_argument("--configs", default="off,cache,memory,parse,default",
                        help=f"comma-separated among {', '.join(CONFIGS)}")
    parser.add_argument("--baseline-checkout", type=Path,
                        help="a folder holding an older harness/ (git archive COMMIT harness): measured first as 'checkout'")
    args = parser.parse_args()
    configs = args.configs.split(",")
    if args.baseline_checkout:
        if not (args.baseline_checkout / "harness" / "lambda_executor" / "executor.py").exists():
            raise SystemExit(f"{args.baseline_checkout} holds no harness/lambda_executor/executor.py")
        CONFIGS["checkout"] = {"PYTHONPATH": str(args.baseline_checkout.resolve()), "IN_MEMORY_CLIENT": "1"}
        configs.insert(0, "checkout")
    results = [measure(config, args.runs, args.warmup, args.cold_starts) for config in configs]

    print(f"\n{args.runs} sequential runs each, milliseconds (p50 / p95); 'off' is LocalStack's own behaviour")
    print(f"{'config':<10} {'ready s':>8} {'cold invoke':>14} {'warm invoke':>14} {'3 Pass':>14} {'3 Lambda tasks':>16} "
          f"{'(service)':>16} {'RSS MB':>7} {'load':>5}")
    for result in results:
        row = [f"{_percentile(result[key], 0.5):6.1f} / {_percentile(result[key], 0.95):5.1f}"
               for key in ("cold", "invoke", "pass3", "lambda3", "lambda3_service")]
        print(f"{result['config']:<10} {result['ready_s']:8.1f} {row[0]:>14} {row[1]:>14} "
              f"{row[2]:>14} {row[3]:>16} {row[4]:>16} {result['memory_mb']:7.0f} {result['load']:5.1f}")
    print("executor share (invocation handed to the runtime -> its result back), p50 ms: "
          + ", ".join(f"{r['config']} {r['executor_p50_ms']}" for r in results))
    print("environment init (process spawned -> runtime asks for its first invocation), p50 ms: "
          + ", ".join(f"{r['config']} {r['init_p50_ms']}" for r in results))
    by_name = {r["config"]: r for r in results}
    # Each step against the one before it; the older checkout against today's default.
    pairs = [(before, after) for before, after in zip(("off", "cache", "memory", "parse"),
                                                      ("cache", "memory", "parse", "default"))]
    pairs.append(("checkout", "default"))
    for before, after in pairs:
        if before in by_name and after in by_name:
            for key, label in (("lambda3", "client"), ("lambda3_service", "service")):
                saved = statistics.median(by_name[before][key]) - statistics.median(by_name[after][key])
                print(f"'{after}' vs '{before}': 3 Lambda tasks p50 ({label}) {saved:+.1f} ms faster "
                      f"({saved / 3:+.1f} ms per task)")

if __name__ == "__main__":
    main()
