"""One training job of the local SageMaker control plane: `python -m scones.harness.sagemaker.training_host SPEC`.

Started by control.py with the project's Python in the job's own folder, with AWS_ENDPOINT_URL
pointing at LocalStack. It does what the PyTorch training container and SageMaker around it do
(https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-running-container.html,
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeTrainingJob.html):

- Downloading: each channel's S3 prefix into opt/ml/input/data/<channel>, and the
  `sagemaker_submit_directory` tarball beside opt/ (the hyperparameter then names that file, which
  AWS's toolkit and our port both unpack into opt/ml/code);
- Training: the job as harness/training_job.py runs it (AWS's toolkit where installed, else our
  port), its output into CloudWatch Logs, group /aws/sagemaker/TrainingJobs, stream
  <job>/algo-1-<epoch seconds>; StoppingCondition.MaxRuntimeInSeconds enforced; SIGTERM (what
  StopTrainingJob sends) stops the script with SIGTERM, and SIGKILL 120 s later, as AWS does;
- Uploading: opt/ml/model as <S3OutputPath>/<job>/output/model.tar.gz (and opt/ml/output/data as
  output.tar.gz beside it when the script wrote any).

Its stdout carries one JSON report a line for control.py: {"secondary", "message"} at each
SecondaryStatus, then {"status": Completed|Failed|Stopped, ...} with "failure" or "artifact".
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scones.harness import training_job

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
STOP_GRACE_S = 120.0           # AWS: SIGTERM, then SIGKILL after 120 seconds
LOG_FLUSH_S = 1.0
DOWNLOAD_THREADS = 8
ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*)$")


def say(**report) -> None:
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


class JobFailed(Exception):
    """The job failed before its script ran; the message is its FailureReason."""


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def download_channel(s3, name: str, channel: dict, target: Path, region: str) -> None:
    source = channel["DataSource"].get("S3DataSource")
    if source is None:
        raise JobFailed(f"ClientError: channel {name}: only S3DataSource channels run locally.")
    if source.get("S3DataType", "S3Prefix") != "S3Prefix":
        raise JobFailed(f"ClientError: channel {name}: S3DataType {source['S3DataType']} is not emulated locally "
                        "(S3Prefix is).")
    bucket, prefix = split_s3(source["S3Uri"])
    keys = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/")]

        def fetch(key: str) -> None:
            destination = target / (key[len(prefix):].lstrip("/") or Path(key).name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        # Many small objects (a thousand images): one GetObject each, several at once.
        with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            list(pool.map(fetch, keys))
    except (ClientError, BotoCoreError) as error:
        raise JobFailed(f"ClientError: Data download failed:Failed to download data. {error}") from None
    found = len(keys)
    if not found:
        raise JobFailed(f'ClientError: No S3 objects found under S3 URL "{source["S3Uri"]}" given in input data '
                        f"source. Please ensure that the bucket exists in the selected region ({region}), that "
                        f'objects exist under that S3 prefix, and that the role has "s3:ListBucket" permissions '
                        f'on bucket "{bucket}".')


def prepare(request: dict, root: Path, s3, region: str) -> Path:
    """The job folder laid out, its data and source downloaded; returns opt/ml."""
    hyperparameters = dict(request.get("HyperParameters") or {})
    submit = hyperparameters.get("sagemaker_submit_directory")
    if submit is None:
        raise JobFailed("ClientError: the hyperparameter sagemaker_submit_directory (the SDK's source tarball in S3) "
                        "is missing: scones runs script-mode PyTorch jobs.")
    uri = json.loads(submit) if submit.startswith('"') else submit
    tarball = root / "sourcedir.tar.gz"
    root.mkdir(parents=True, exist_ok=True)
    try:
        s3.download_file(*split_s3(uri), str(tarball))
    except (ClientError, BotoCoreError) as error:
        raise JobFailed(f"ClientError: could not download sagemaker_submit_directory {uri}: {error}") from None
    hyperparameters["sagemaker_submit_directory"] = json.dumps(str(tarball))
    input_mode = request["AlgorithmSpecification"].get("TrainingInputMode", "File")
    channels = request.get("InputDataConfig") or []
    configs = {}
    for channel in channels:
        source = channel["DataSource"].get("S3DataSource", {})
        configs[channel["ChannelName"]] = {
            "TrainingInputMode": channel.get("InputMode", input_mode),
            "S3DistributionType": source.get("S3DataDistributionType", "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
            **({"ContentType": channel["ContentType"]} if channel.get("ContentType") else {}),
        }
    base = training_job.lay_out_job(root, hyperparameters, configs,
                                    instance_type=request["ResourceConfig"].get("InstanceType", "ml.m5.xlarge"))
    for channel in channels:
        download_channel(s3, channel["ChannelName"], channel, base / "input" / "data" / channel["ChannelName"], region)
    return base


class CloudWatchLog:
    """Lines to the job's log stream, in batches (a second at most apart), as AWS's agent ships them."""

    def __init__(self, job: str) -> None:
        self.logs = boto3.client("logs")
        self.stream = f"{job}/algo-1-{int(time.time())}"
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()
        try:
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=self.stream)

    def write(self, line: str) -> None:
        self.pending.append({"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")})
        if time.monotonic() - self.last_flush >= LOG_FLUSH_S or len(self.pending) >= 1000:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=self.stream, logEvents=self.pending)
        self.pending = []
        self.last_flush = time.monotonic()


def last_error_line(lines: list[str]) -> str:
    """The script's last error line (a traceback's exception line), else its last line."""
    for line in reversed(lines):
        match = ERROR_LINE.match(line)
        if match:
            return match.group(1).strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def upload_outputs(s3, base: Path, output_path: str, job: str) -> str | None:
    """model.tar.gz (and output.tar.gz) under <S3OutputPath>/<job>/output/; the model's URI."""
    bucket, prefix = split_s3(output_path.rstrip("/"))
    key_base = f"{prefix}/{job}/output" if prefix else f"{job}/output"
    model_tar = base.parent / "model.tar.gz"
    training_job.pack_model_dir(base / "model", model_tar)
    s3.upload_file(str(model_tar), bucket, f"{key_base}/model.tar.gz")
    if any((base / "output" / "data").iterdir()):
        output_tar = base.parent / "output.tar.gz"
        with tarfile.open(output_tar, "w:gz") as archive:
            for path in sorted((base / "output" / "data").iterdir()):
                archive.add(str(path), arcname=path.name)
        s3.upload_file(str(output_tar), bucket, f"{key_base}/output.tar.gz")
    return f"s3://{bucket}/{key_base}/model.tar.gz"


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    request, region = spec["request"], spec["region"]
    job = request["TrainingJobName"]
    folder = Path(spec_path).parent
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    s3 = boto3.client("s3")
    say(secondary="Downloading", message="Downloading input data")
    phase = time.monotonic()
    try:
        base = prepare(request, folder / "job", s3, region)
    except JobFailed as error:
        say(status="Failed", secondary="Failed", message="Training job failed", failure=str(error))
        return
    if stop_requested.is_set():
        say(status="Stopped", secondary="Stopped", message="Training job stopped")
        return
    print(f"downloading took {time.monotonic() - phase:.2f} s", file=sys.stderr, flush=True)
    say(secondary="Training", message="Training image download completed. Training in progress.", training_start=True)
    toolkit = training_job.toolkit_python()
    command, env, cwd = training_job.job_command(base, name=job, toolkit=toolkit)
    log = CloudWatchLog(job)
    lines: list[str] = []
    limit = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", 86400)
    started = time.monotonic()
    with open(folder / "job.log", "w") as log_file:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, start_new_session=True)
        ended_by: list[str] = []

        def enforce() -> None:
            """StopTrainingJob's SIGTERM or MaxRuntimeInSeconds: SIGTERM the script, SIGKILL it 120 s later."""
            while process.poll() is None:
                if stop_requested.wait(0.2) or time.monotonic() - started > limit:
                    ended_by.append("Stopped" if stop_requested.is_set() else "MaxRuntimeExceeded")
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                    return
        threading.Thread(target=enforce, daemon=True).start()
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            log_file.flush()
            lines = [*lines[-200:], line]
            log.write(line)
        code = process.wait()
        log.flush()
    if ended_by:
        artifact = _upload_quietly(s3, base, request, job)
        reason = ended_by[0]
        say(status="Stopped", secondary=reason, artifact=artifact,
            message="Training job stopped" if reason == "Stopped"
            else "Training job runtime exceeded MaxRuntimeInSeconds provided")
        return
    if code != 0:
        say(status="Failed", secondary="Failed", message="Training job failed",
            failure=f'AlgorithmError: ExecuteUserScriptError:\nExitCode {code}\nErrorMessage "{last_error_line(lines)}"\n'
                    f'Command "{" ".join(command)}", exit code: {code}')
        return
    print(f"training took {time.monotonic() - started:.2f} s", file=sys.stderr, flush=True)
    say(secondary="Uploading", message="Uploading generated training model")
    phase = time.monotonic()
    try:
        artifact = upload_outputs(s3, base, request["OutputDataConfig"]["S3OutputPath"], job)
    except (ClientError, BotoCoreError, OSError) as error:
        say(status="Failed", secondary="Failed", message="Training job failed",
            failure=f"ClientError: could not upload the model artifact to {request['OutputDataConfig']['S3OutputPath']}: {error}")
        return
    print(f"uploading took {time.monotonic() - phase:.2f} s", file=sys.stderr, flush=True)
    say(status="Completed", secondary="Completed", message="Training job completed", artifact=artifact)


def _upload_quietly(s3, base: Path, request: dict, job: str) -> str | None:
    """A stopped job's model, when its script saved one (AWS uploads what /opt/ml/model holds)."""
    if not any((base / "model").iterdir()):
        return None
    try:
        return upload_outputs(s3, base, request["OutputDataConfig"]["S3OutputPath"], job)
    except (ClientError, BotoCoreError, OSError):
        return None


if __name__ == "__main__":
    main(sys.argv[1])
