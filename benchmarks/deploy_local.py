"""`scones deploy --target local` with a real training job, step by step: where its time goes.

    .venv/bin/python benchmarks/deploy_local.py [--epochs 2] [--quick]

Starts a LocalStack of its own (with the local SageMaker control plane) on a free port and runs the local
target's plan (deploy/local.py deploy_local_stack, the code `scones deploy --target local` runs) with
SageMaker through the control plane and a training job of --epochs epochs on the staged images
(SCONES_DATA_DIR); --quick trains the small network tests/e2e/test_deploy_local_api.py trains. Prints, for
each resource of the plan, when its ensure started (from the deploy's start) and how long it took, in the
order they started (resources of different steps overlap: the executor runs independent ones side by side),
then the deploy's total and each step's span. Then destroys what it made. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from scones import settings  # noqa: E402
from scones.deploy import local as local_target  # noqa: E402
from scones.deploy import planner  # noqa: E402
from scones.harness.sagemaker import processes  # noqa: E402
from support import running_localstack  # noqa: E402

QUICK_NETWORK = {"widths": "[8, 16, 32]", "blocks": "[1, 1, 1]"}


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the small network of the e2e test")
    options = parser.parse_args()
    hyperparameters = {"epochs": str(options.epochs), **(QUICK_NETWORK if options.quick else {})}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-local-") as folder:
        scratch = Path(folder)
        with running_localstack(scratch / "localstack", extra_env={processes.PYTHON_ENV: sys.executable}) as ls:
            name = f"b{uuid.uuid4().hex[:8]}"
            config = local_target.LocalConfig(
                localstack_url=ls.url, endpoint_url=ls.url, data_dir=settings.data_dir(), bucket=f"{name}-data",
                prefix=name, endpoint_name=f"{name}-classifier", sagemaker=planner.SAGEMAKER_API, train=True,
                hyperparameters=hyperparameters, restore_capture=lambda s3: None)
            steps = {resource.id: resource.step for resource in planner.plan(config.target())}
            timings: dict[str, tuple[float, float]] = {}
            print(f"load average before: {load()}")
            started = time.perf_counter()
            try:
                local_target.deploy_local_stack(config, state_dir=scratch / "state", timings=timings)
                total = time.perf_counter() - started
            finally:
                local_target.destroy_local_stack(localstack_url=ls.url, state_dir=scratch / "state")
            print(f"load average after: {load()}")
    print(f"\n`scones deploy --target local`'s plan, hyperparameters {hyperparameters}:\n")
    print(f"{'step':<9} {'resource (plan id)':<36} {'start s':>8} {'took s':>8}")
    for resource_id, (begin, end) in sorted(timings.items(), key=lambda item: item[1][0]):
        print(f"{steps.get(resource_id, '?'):<9} {resource_id:<36} {begin - started:8.2f} {end - begin:8.2f}")
    print(f"\n{'step':<9} {'from s':>8} {'to s':>8} {'span s':>8}")
    for step in planner.steps_of(planner.plan(config.target())):
        spans = [timings[resource_id] for resource_id, owner in steps.items() if owner == step and resource_id in timings]
        begin, end = min(s for s, _ in spans) - started, max(e for _, e in spans) - started
        print(f"{step:<9} {begin:8.2f} {end:8.2f} {end - begin:8.2f}")
    print(f"\ndeploy total: {total:.2f} s")


if __name__ == "__main__":
    main()
