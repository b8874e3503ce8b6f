"""What the local SageMaker control plane costs over doing the same work directly.

    .venv/bin/python benchmarks/sagemaker_control.py [--endpoints 3] [--jobs 2]

Starts a LocalStack of its own (with the control plane) on a free port. Same run, alternating:
- endpoint: CreateEndpoint -> InService (DescribeEndpoint polled every 20 ms) for a stub model in S3,
  served by the spare endpoint host (started ahead of need and waited for here, as a stack's plan
  gives it time to start), against the same with a fresh host (a model whose container Environment
  sets OMP_NUM_THREADS, which a started spare cannot take: the control plane starts a new one), and
  against starting the endpoint server directly (EndpointServer subprocess from the local
  model.tar.gz, what `scones up` does) -> /ping 200. Target: CreateEndpoint -> InService <= 3 s.
- training job: CreateTrainingJob -> Completed (1 epoch of the tiny network on synthetic data),
  against harness.training_job.train_model on the same data and hyperparameters (train.py under
  the toolkit's contract, no S3). Target: overhead <= 3 s.
Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import boto3  # noqa: E402

from scones import testing  # noqa: E402
from scones.deploy import sagemaker as sm  # noqa: E402
from scones.harness import training_job  # noqa: E402
from scones.harness.endpoint import EndpointServer  # noqa: E402
from scones.harness.sagemaker import processes  # noqa: E402
from scones.testing import build_stub_model  # noqa: E402
from support import running_localstack  # noqa: E402

REGION = "us-east-1"
ROLE = "arn:aws:iam::000000000000:role/bench"


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):6.2f} s  min {min(values):6.2f} s  max {max(values):6.2f} s  (n={len(values)})"


def until(condition, timeout: float = 600.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit("timed out")


def wait_for_spare(root: Path) -> None:
    """Until a spare endpoint host has imported what it needs (it logs so) and waits for its assignment."""
    until(lambda: any("spare endpoint host ready" in log.read_text(errors="replace")
                      for log in (root / "spares").glob("*.log")), timeout=120, interval=0.1)


def time_endpoint(sagemaker, config: str) -> float:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config)
    status = until(lambda: (lambda s: s if s != "Creating" else None)(
        sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"]))
    elapsed = time.perf_counter() - started
    if status != "InService":
        raise SystemExit(f"endpoint {name}: {sagemaker.describe_endpoint(EndpointName=name).get('FailureReason')}")
    sagemaker.delete_endpoint(EndpointName=name)
    return elapsed


def time_direct_endpoint(archive: Path) -> float:
    started = time.perf_counter()
    server = EndpointServer(model=archive, mode="subprocess").start(wait=True)
    elapsed = time.perf_counter() - started
    server.stop()
    return elapsed


def time_job(sagemaker, source: str) -> float:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    sagemaker.create_training_job(
        TrainingJobName=name, RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": sm.training_image(REGION), "TrainingInputMode": "File"},
        HyperParameters=sm.sdk_hyperparameters(job_name=name, region=REGION, submit_directory=source,
                                               user=testing.TINY_HYPERPARAMETERS),
        InputDataConfig=[{"ChannelName": channel, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://bench/data/{channel}"}}} for channel in ("train", "test")],
        OutputDataConfig={"S3OutputPath": "s3://bench/jobs"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    status = until(lambda: (lambda s: s if s not in ("InProgress", "Stopping") else None)(
        sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]), interval=0.05)
    if status != "Completed":
        raise SystemExit(f"job {name}: {sagemaker.describe_training_job(TrainingJobName=name).get('FailureReason')}")
    return time.perf_counter() - started


def time_direct_job(data: Path, scratch: Path) -> float:
    started = time.perf_counter()
    training_job.train_model(data, scratch / uuid.uuid4().hex, testing.TINY_HYPERPARAMETERS, echo=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sagemaker-") as folder:
        scratch = Path(folder)
        root = scratch / "sagemaker"
        with running_localstack(scratch / "localstack", extra_env={processes.PYTHON_ENV: sys.executable,
                                                                   processes.SAGEMAKER_DIR_ENV: str(root)}) as ls:
            def client(service: str):
                return boto3.client(service, endpoint_url=ls.url, region_name=REGION,
                                    aws_access_key_id="test", aws_secret_access_key="test")
            sagemaker, s3 = client("sagemaker"), client("s3")
            s3.create_bucket(Bucket="bench")
            archive = build_stub_model(scratch / "stub")
            s3.upload_file(str(archive), "bench", "stub/model.tar.gz")
            sagemaker.create_model(ModelName="bench", ExecutionRoleArn=ROLE, PrimaryContainer={
                "Image": sm.inference_image(REGION), "ModelDataUrl": "s3://bench/stub/model.tar.gz"})
            sagemaker.create_model(ModelName="bench-fresh", ExecutionRoleArn=ROLE, PrimaryContainer={
                "Image": sm.inference_image(REGION), "ModelDataUrl": "s3://bench/stub/model.tar.gz",
                "Environment": {"OMP_NUM_THREADS": "1"}})
            for model in ("bench", "bench-fresh"):
                sagemaker.create_endpoint_config(EndpointConfigName=model, ProductionVariants=[{
                    "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large"}])
            print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
            spare, fresh, direct = [], [], []
            for _ in range(options.endpoints):
                direct.append(time_direct_endpoint(archive))
                fresh.append(time_endpoint(sagemaker, "bench-fresh"))
                wait_for_spare(root)
                spare.append(time_endpoint(sagemaker, "bench"))
            print(f"endpoint ready, direct EndpointServer:       {summary(direct)}")
            print(f"CreateEndpoint -> InService, fresh host:     {summary(fresh)}")
            print(f"CreateEndpoint -> InService, spare host:     {summary(spare)}")
            print(f"  spare against fresh (median):               {statistics.median(spare) - statistics.median(fresh):+.2f} s")
            print(f"load average after endpoints: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")

            if not options.jobs:
                return
            data = testing.write_synthetic_dataset(scratch / "data")
            for path in data.rglob("*.png"):
                s3.upload_file(str(path), "bench", f"data/{path.relative_to(data)}")
            s3.put_object(Bucket="bench", Key="source/sourcedir.tar.gz", Body=sm.source_tarball())
            jobs, plain = [], []
            for _ in range(options.jobs):
                plain.append(time_direct_job(data, scratch / "direct"))
                jobs.append(time_job(sagemaker, "s3://bench/source/sourcedir.tar.gz"))
            print(f"train.py as a job, directly (train_model):  {summary(plain)}")
            print(f"CreateTrainingJob -> Completed:             {summary(jobs)}")
            print(f"  overhead (median):                        {statistics.median(jobs) - statistics.median(plain):+.2f} s")


if __name__ == "__main__":
    main()
