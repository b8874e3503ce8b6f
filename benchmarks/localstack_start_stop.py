"""One test LocalStack's life, timed by phase: start to healthy, the first Lambda call (LocalStack loads
the service then), create + Active, one invoke, and stop() (SIGTERM until the process and its Lambda
environment are gone), with SCONES_LOCALSTACK_QUICK_EXIT on and off, alternated in the same run so that
both see the same machine load.

    .venv/bin/python benchmarks/localstack_start_stop.py [--rounds 4]

Each LocalStack has a fresh home of its own under a temporary folder, on a free port, as the tests'
(tests/support.py::running_localstack). Prints each round's figures, then the medians, and the load
average before and after. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import boto3

from scones import settings
from scones.harness.endpoint import free_port
from scones.harness.localstack import LocalStack

PHASES = ("healthy", "first call", "create", "invoke", "stop")
VARIANTS = {"quick exit": {}, f"{settings.LOCALSTACK_QUICK_EXIT}=0": {settings.LOCALSTACK_QUICK_EXIT: "0"}}


def handler_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return 'ok'\n")
    return buffer.getvalue()


def one_life(home: Path, extra_env: dict[str, str]) -> dict[str, float]:
    instance = LocalStack(port=free_port(), home=home, extra_env=extra_env)
    figures: dict[str, float] = {}
    mark = time.perf_counter()

    def took(phase: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        figures[phase], mark = now - mark, now

    instance.start()
    try:
        instance.wait_ready(timeout=120)
        took("healthy")
        client = boto3.client("lambda", endpoint_url=instance.url, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        client.list_functions()
        took("first call")
        name = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_function(FunctionName=name, Runtime="python3.12", Handler="app.handler",
                               Role="arn:aws:iam::000000000000:role/r",
                               Code={"ZipFile": handler_zip()})
        client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.5})
        took("create")
        client.invoke(FunctionName=name)["Payload"].read()
        took("invoke")
    finally:
        instance.stop()
    took("stop")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    LocalStack().ensure_venv(progress=False)
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-localstack-") as folder:
        for round_number in range(args.rounds):
            for variant, extra_env in VARIANTS.items():
                figures = one_life(Path(folder) / f"{round_number}-{len(results[variant])}-{variant[:5]}", extra_env)
                results[variant].append(figures)
                print(f"round {round_number + 1} {variant:>32}: "
                      + "  ".join(f"{phase} {figures[phase]:.2f} s" for phase in PHASES), flush=True)
    print("medians:")
    for variant, rounds in results.items():
        print(f"  {variant:>32}: " + "  ".join(f"{phase} {statistics.median(r[phase] for r in rounds):.2f} s"
                                                 for phase in PHASES))
    print(f"load average after: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
