"""What a deploy builds, one typed value per resource: each plans (describes itself), ensures (idempotent) and deletes.

A resource is a frozen dataclass made by deploy/planner.py; deploy/executor.py runs a list of them, recording
each one (its kind and name, deploy/record.py) BEFORE it is created, so a deploy killed midway is still
destroyable, and `destroy` deletes the record's entries newest first with `Kind.delete(run, entry)`, from the
record alone. A field may be a Ref to what an earlier resource made (a training job's model.tar.gz, a function's
ARN); the executor resolves it just before `ensure`. The same values run on AWS and on the local stack: the
boto3 session in the Run decides where the calls go (chalice's deploy/models.py is the model for this).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import boto3
from botocore.exceptions import ClientError

from scones.deploy import event_runs as runs
from scones.deploy import iam as iam_roles
from scones.deploy import monitoring, scaling
from scones.deploy import sagemaker as sm
from scones.deploy.packaging import FunctionSpec
from scones.deploy.waiting import DeployError, Progress

Entry = dict[str, Any]   # one resource in a deploy record: {"kind", "name", "id", ...what delete needs}


class Refusal(DeployError):
    """The deploy will not start or go on: the message says what to fix."""


@dataclass(frozen=True)
class Ref:
    """A value another resource of the plan makes: outputs[key] of the resource with this plan id."""
    id: str
    key: str

    def __str__(self) -> str:
        return f"<{self.key} of {self.id}>"


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _tolerating(call: Callable[[], Any], *codes: str) -> bool:
    """Run a delete; one whose resource is already gone (one of these error codes) returns False."""
    try:
        call()
        return True
    except ClientError as error:
        if _code(error) in codes or sm._missing(error):
            return False
        raise


class Run:
    """One execution's session, clients (one per thread: a boto3 Session is not thread-safe, a client is),
    progress, sleep and record writer."""

    def __init__(self, session: boto3.Session, *, region: str | None = None, progress: Progress | None = None,
                 sleep: Callable[[float], None] | None = None, save: Callable[[], None] | None = None,
                 max_pause_s: float | None = None):
        self.session, self.region = session, region
        self.say: Progress = progress or (lambda message: None)
        self.progress = progress
        self.stopping = threading.Event()   # set when the deploy is interrupted: every wait gives up
        self._sleep = sleep or (lambda seconds: self.stopping.wait(min(seconds, max_pause_s or seconds)))
        self._save = save or (lambda: None)
        self._lock = threading.RLock()
        self._clients: dict[tuple[int, str], Any] = {}

    def sleep(self, seconds: float) -> None:
        """Each poll's pause; raises once the deploy is interrupted, so no thread waits on after it."""
        if not self.stopping.is_set():
            self._sleep(seconds)
        if self.stopping.is_set():
            raise DeployError("deploy abandoned: it was interrupted")

    def client(self, service: str):
        key = (threading.get_ident(), service)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = (self.session.client(service, region_name=self.region) if self.region
                                      else self.session.client(service))
            return self._clients[key]

    def save(self) -> None:
        with self._lock:
            self._save()

    @property
    def lock(self) -> threading.RLock:
        return self._lock


@dataclass(frozen=True, kw_only=True)
class Resource:
    """id: unique in a plan; after: ids that must be ensured first; step: the stage shown to the user."""
    id: str
    after: tuple[str, ...] = ()
    step: str = "workflow"
    kind: ClassVar[str] = ""
    recorded: ClassVar[bool] = True   # False: nothing of its own to delete (objects in the bucket, a registration)

    @property
    def name(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        """Create or bring up to date; returns the outputs later resources may Ref. May add to entry (then run.save())."""
        raise NotImplementedError

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        """Delete what the entry names; returns what was deleted, or None when it was already gone."""
        return None

    def refs(self) -> list[Ref]:
        found: list[Ref] = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            values = value.values() if isinstance(value, Mapping) else [value]
            found += [v for v in values if isinstance(v, Ref)]
        return found

    def resolved(self, outputs: Mapping[str, Mapping[str, Any]]) -> "Resource":
        def value_of(value):
            return outputs[value.id][value.key] if isinstance(value, Ref) else value
        changes = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Ref):
                changes[item.name] = value_of(value)
            elif isinstance(value, Mapping) and any(isinstance(v, Ref) for v in value.values()):
                changes[item.name] = {k: value_of(v) for k, v in value.items()}
        return dataclasses.replace(self, **changes) if changes else self


# --- S3 -------------------------------------------------------------------------------------------------

def bucket_state(s3, bucket: str, account_id: str) -> str:
    """'ours' (exists, this account owns it), 'absent', or a Refusal for someone else's bucket."""
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account_id)
        return "ours"
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.response.get("Error", {}).get("Code")
        if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
            return "absent"
        if status == 403 or code in ("403", "AccessDenied", "Forbidden"):
            raise Refusal(
                f"bucket {bucket} belongs to another account (or account {account_id} may not read it); "
                f"choose another name with --bucket"
            ) from error
        raise


def ensure_bucket(s3, bucket: str, region: str, account_id: str, progress: Progress | None = None) -> bool:
    """Create the bucket unless this account already owns it. Returns whether it was created now."""
    if bucket_state(s3, bucket, account_id) == "ours":
        if progress:
            progress(f"bucket {bucket}: reused")
        return False
    arguments: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**arguments)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code == "BucketAlreadyOwnedByYou":
            return False
        if code == "BucketAlreadyExists":
            raise Refusal(f"bucket {bucket} belongs to another account; choose another name with --bucket") from error
        raise
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                                        "RestrictPublicBuckets": True},
    )
    if progress:
        progress(f"bucket {bucket}: created")
    return True


def empty_and_delete_bucket(s3, bucket: str) -> None:
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            objects = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                       for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            for start in range(0, len(objects), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objects[start:start + 1000], "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
    except ClientError as error:
        if _code(error) != "NoSuchBucket":
            raise


@dataclass(frozen=True, kw_only=True)
class Bucket(Resource):
    bucket: str
    region: str
    account_id: str
    kind: ClassVar[str] = "bucket"

    @property
    def name(self) -> str:
        return self.bucket

    def describe(self) -> str:
        return f"S3 bucket {self.bucket} (public access blocked; reused when this account owns it)"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        created = ensure_bucket(run.client("s3"), self.bucket, self.region, self.account_id, run.progress)
        entry["created"] = bool(entry.get("created")) or created
        return {"name": self.bucket}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        # The executor's destroy decides whether the bucket goes (`--delete-bucket` on AWS); here it goes.
        if not entry.get("created"):
            raise Refusal(f"bucket {entry['name']} existed before the deploy; it was left alone "
                          f"(delete it yourself if you mean to)")
        empty_and_delete_bucket(run.client("s3"), entry["name"])
        return f"bucket {entry['name']} and its objects"


@dataclass(frozen=True, kw_only=True)
class Dataset(Resource):
    """The staged images and .lst files (unchanged objects skipped); they go with the bucket."""
    bucket: str
    data_dir: Path
    parts: tuple[str, ...]
    step: str = "bucket"
    kind: ClassVar[str] = "dataset"
    recorded: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{{{','.join(self.parts)}}}/"

    def describe(self) -> str:
        from scones.deploy.workflow import dataset_files

        try:
            count = f"{len(dataset_files(self.data_dir, self.parts))} objects"
        except DeployError as error:
            count = f"nothing ({error})"
        return f"dataset {', '.join(p + '/' for p in self.parts)} and .lst files from {self.data_dir} -> " \
               f"s3://{self.bucket}: upload {count} (unchanged ones skipped)"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        from scones.deploy.workflow import upload_dataset

        summary = upload_dataset(_RunSession(run), self.bucket, self.data_dir, progress=run.progress,
                                 parts=self.parts)
        run.say(f"dataset: {summary.uploaded} uploaded, {summary.skipped} already there")
        return {"uploaded": summary.uploaded, "skipped": summary.skipped, "parts": list(self.parts)}


class _RunSession:
    """What upload_dataset needs of a session: clients, from the run (its region, one per thread)."""

    def __init__(self, run: Run):
        self._run = run

    def client(self, service: str):
        return self._run.client(service)


@dataclass(frozen=True, kw_only=True)
class CaptureRestore(Resource):
    """Local only: the capture files S3 lost (LocalStack keeps nothing across restarts) put back from the
    endpoint's spool archive; `restore(s3_client)` is the harness's (harness/serving/capture.py)."""
    bucket: str
    restore: Callable[[Any], Any]
    step: str = "bucket"
    kind: ClassVar[str] = "capture-restore"
    recorded: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/data_capture"

    def describe(self) -> str:
        return f"data capture restored to s3://{self.bucket} from the endpoint's spool archive (what S3 lost)"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        report = self.restore(run.client("s3"))
        return {"report": report}


@dataclass(frozen=True, kw_only=True)
class ObjectUpload(Resource):
    """A local file put in the bucket (a given model.tar.gz that CreateModel reads, a baseline.json); it goes
    with the bucket."""
    bucket: str
    key: str
    path: Path | None = None
    body: Mapping[str, Any] | None = None      # JSON written as the object instead of a file
    what: str = "object"
    kind: ClassVar[str] = "object"
    recorded: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def describe(self) -> str:
        source = self.path if self.path is not None else "JSON"
        return f"{self.what} {source} -> {self.name}"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        import hashlib

        s3 = run.client("s3")
        data = Path(self.path).read_bytes() if self.path is not None else json.dumps(self.body).encode()
        try:
            unchanged = s3.head_object(Bucket=self.bucket, Key=self.key)["ETag"].strip('"') == hashlib.md5(data).hexdigest()
        except ClientError:
            unchanged = False
        if not unchanged:
            s3.put_object(Bucket=self.bucket, Key=self.key, Body=data)
        run.say(f"{self.what}: {self.name} ({'unchanged' if unchanged else 'uploaded'})")
        return {"uri": self.name}


# --- IAM ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Role(Resource):
    role: str                      # the role's name
    purpose: str                   # "sagemaker", "lambda", ... (the record's and the status's word for it)
    service: str                   # who assumes it, e.g. lambda.amazonaws.com
    policy: Mapping[str, Any]
    prefix: str
    step: str = "roles"
    kind: ClassVar[str] = "role"

    @property
    def name(self) -> str:
        return self.role

    def describe(self) -> str:
        sids = ", ".join(s.get("Sid", "?") for s in self.policy.get("Statement", []))
        return f"IAM role {self.role} for {self.service} (inline policy: {sids})"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        entry["purpose"] = self.purpose
        arn, _ = iam_roles.ensure_role(run.client("iam"), name=self.role, trust=iam_roles.trust_policy(self.service),
                                       policy=dict(self.policy), tags={"scones:prefix": self.prefix},
                                       progress=run.progress)
        entry["arn"] = arn
        return {"arn": arn}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        iam = run.client("iam")
        try:
            tags = {t["Key"] for t in iam.get_role(RoleName=entry["name"])["Role"].get("Tags", [])}
        except ClientError as error:
            if _code(error) == "NoSuchEntity":
                return None
            raise
        if "scones:prefix" not in tags:   # someone else's role of that name: the deploy refused to adopt it
            return None
        iam_roles.delete_role(iam, entry["name"])
        return f"IAM role {entry['name']}"


# --- SageMaker --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TrainingJob(Resource):
    """A training job (pytorch: local_model/train.py in the framework container; builtin: the original algorithm).
    A Completed job of the same trainer recorded earlier is reused; one InProgress is waited for, never doubled."""
    prefix: str
    trainer: str
    bucket: str
    region: str
    role_arn: str | Ref
    image: str
    instance_type: str
    hyperparameters: Mapping[str, object]
    data_dir: Path
    timeout_s: float
    step: str = "model"
    kind: ClassVar[str] = "training-job"

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.trainer}"   # the job's own name gets a start time (see ensure)

    def describe(self) -> str:
        what = f"running local_model/{sm.ENTRY_POINT}" if self.trainer == "pytorch" else "image + .lst channels"
        return f"training job ({self.trainer}) {self.prefix}-{self.trainer}-<start time> on {self.instance_type} " \
               f"with {self.image}, {what} (a Completed one recorded earlier is reused)"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        from scones import settings

        sagemaker, say = run.client("sagemaker"), run.say
        job = entry.get("job")
        if job and job.get("status") == "Completed" and job.get("model_data"):
            say(f"training job {job['name']}: Completed earlier, reusing {job['model_data']}")
            return {"model_data": job["model_data"]}
        if job:
            status = sagemaker.describe_training_job(TrainingJobName=job["name"])["TrainingJobStatus"]
            if status in sm.TRAINING_FAILED:
                say(f"training job {job['name']} is {status}; starting a new one")
                job = None
        if not job:
            job_name = f"{self.name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"[:63]
            training = sm.TrainingPlan(bucket=self.bucket, region=self.region, role_arn=str(self.role_arn),
                                       image=self.image, instance_type=self.instance_type,
                                       hyperparameters=dict(self.hyperparameters))
            s3 = run.client("s3")
            job = {"name": job_name, "arn": None, "status": "Starting", "model_data": None, "trainer": self.trainer}
            if self.trainer == "builtin":
                samples = sm.upload_builtin_lists(s3, self.bucket, settings.data_dir(self.data_dir), run.progress)
                entry["job"] = job
                run.save()   # the job's name before CreateTrainingJob: a killed deploy resumes it, never starts two
                job["arn"] = sm.start_builtin_training_job(sagemaker, training, job_name=job_name,
                                                           num_training_samples=samples, progress=run.progress,
                                                           sleep=run.sleep)
            else:
                submit_directory = sm.upload_source(s3, self.bucket, run.progress)
                entry["job"] = job
                run.save()
                job["arn"] = sm.start_training_job(sagemaker, training, job_name=job_name,
                                                   submit_directory=submit_directory, progress=run.progress,
                                                   sleep=run.sleep)
            job["status"] = "InProgress"
            run.save()
        described = sm.wait_training_job(sagemaker, job["name"], timeout_s=self.timeout_s, progress=run.progress,
                                         sleep=run.sleep)
        job.update(status=described["TrainingJobStatus"], model_data=described["ModelArtifacts"]["S3ModelArtifacts"])
        entry["job"] = job
        return {"model_data": job["model_data"]}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        """SageMaker keeps training jobs (there is no DeleteTrainingJob); one still running is stopped."""
        job = entry.get("job") or {}
        if not job.get("name"):
            return None
        sagemaker = run.client("sagemaker")
        try:
            status = sagemaker.describe_training_job(TrainingJobName=job["name"])["TrainingJobStatus"]
        except ClientError as error:
            if sm._missing(error):
                return None
            raise
        if status == "InProgress":
            sagemaker.stop_training_job(TrainingJobName=job["name"])
            return f"training job {job['name']} (stopped)"
        return None


@dataclass(frozen=True, kw_only=True)
class Model(Resource):
    prefix: str
    image: str
    model_data: str | Ref
    role_arn: str | Ref
    trainer: str
    step: str = "endpoint"
    kind: ClassVar[str] = "model"

    def request(self) -> dict:
        return sm.model_request(prefix=self.prefix, image=self.image, model_data=str(self.model_data),
                                role_arn=str(self.role_arn), trainer=self.trainer)

    @property
    def name(self) -> str:
        return self.request()["ModelName"]

    def describe(self) -> str:
        name = self.name if not self.refs() else f"{self.prefix}-model-<digest>"
        return f"SageMaker model {name}: {self.image} serving {self.model_data}"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        arn, _ = sm.ensure_model(run.client("sagemaker"), self.request(), run.progress)
        entry["arn"] = arn
        return {"name": self.name, "arn": arn}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        gone = sm.delete_quietly(functools.partial(run.client("sagemaker").delete_model, ModelName=entry["name"]))
        return f"model {entry['name']}" if gone else None


@dataclass(frozen=True, kw_only=True)
class EndpointConfig(Resource):
    prefix: str
    model_name: str | Ref
    capture_s3_uri: str
    instance_type: str
    step: str = "endpoint"
    kind: ClassVar[str] = "endpoint-config"

    def request(self) -> dict:
        return sm.endpoint_config_request(prefix=self.prefix, model_name=str(self.model_name),
                                          capture_s3_uri=self.capture_s3_uri, instance_type=self.instance_type)

    @property
    def name(self) -> str:
        return self.request()["EndpointConfigName"]

    def describe(self) -> str:
        name = self.name if not self.refs() else f"{self.prefix}-config-<digest>"
        return f"endpoint config {name}: variant {sm.VARIANT_NAME} of {self.model_name} on {self.instance_type}, " \
               f"data capture 100% to {self.capture_s3_uri}"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        arn, _ = sm.ensure_endpoint_config(run.client("sagemaker"), self.request(), run.progress)
        entry["arn"] = arn
        return {"name": self.name, "arn": arn}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        client = run.client("sagemaker")
        gone = sm.delete_quietly(functools.partial(client.delete_endpoint_config, EndpointConfigName=entry["name"]))
        return f"endpoint config {entry['name']}" if gone else None


@dataclass(frozen=True, kw_only=True)
class Endpoint(Resource):
    endpoint: str
    config_name: str | Ref
    timeout_s: float
    step: str = "endpoint"
    kind: ClassVar[str] = "endpoint"

    @property
    def name(self) -> str:
        return self.endpoint

    def describe(self) -> str:
        return f"SageMaker endpoint {self.endpoint} on {self.config_name}, waited to InService"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        described, action = sm.ensure_endpoint(run.client("sagemaker"), name=self.endpoint,
                                               config_name=str(self.config_name), progress=run.progress,
                                               sleep=run.sleep, timeout_s=self.timeout_s)
        entry.update(arn=described["EndpointArn"], config=str(self.config_name))
        run.say(f"endpoint {self.endpoint}: {action}, InService")
        return {"name": self.endpoint, "arn": described["EndpointArn"]}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        gone = sm.delete_quietly(functools.partial(run.client("sagemaker").delete_endpoint, EndpointName=entry["name"]))
        return f"endpoint {entry['name']}" if gone else None


@dataclass(frozen=True, kw_only=True)
class EndpointRoute(Resource):
    """Local stack without a SageMaker control plane: LocalStack's sagemaker-runtime route sends the endpoint's
    InvokeEndpoint to the endpoint server `scones up` started; `register(name, url)` is the harness's."""
    endpoint: str
    url: str
    register: Callable[[str, str], None]
    step: str = "endpoint"
    kind: ClassVar[str] = "endpoint-route"
    recorded: ClassVar[bool] = False    # LocalStack forgets it when it stops; the server is the stack's process

    @property
    def name(self) -> str:
        return self.endpoint

    def describe(self) -> str:
        return f"endpoint {self.endpoint}: the endpoint server on {self.url}, registered with LocalStack's " \
               f"sagemaker-runtime route"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        self.register(self.endpoint, self.url)
        return {"name": self.endpoint}


@dataclass(frozen=True, kw_only=True)
class Autoscaling(Resource):
    """Application Auto Scaling: the variant's scalable target and its target-tracking policy."""
    prefix: str
    endpoint: str
    options: scaling.ScalingOptions
    step: str = "endpoint"
    kind: ClassVar[str] = "autoscaling"

    @property
    def name(self) -> str:
        return scaling.resource_id(self.endpoint)

    def describe(self) -> str:
        return f"autoscaling {self.name}: {self.options.min_instances}-{self.options.max_instances} instances, " \
               f"target tracking {self.options.target_invocations:g} {scaling.METRIC} (policy " \
               f"{scaling.policy_name(self.prefix)})"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        made = scaling.ensure_autoscaling(run.client("application-autoscaling"), prefix=self.prefix,
                                          endpoint_name=self.endpoint, options=self.options, progress=run.progress)
        entry.update(made.to_dict())
        return {"resource_id": made.resource_id}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        made = scaling.ScalingResources.from_dict(entry)
        deleted = scaling.remove_autoscaling(run.client("application-autoscaling"), made) if made else []
        return ", ".join(deleted) or None


# --- Lambda, Step Functions -----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Function(Resource):
    function: str
    spec: FunctionSpec
    role_arn: str | Ref
    environment: Mapping[str, str]
    kind: ClassVar[str] = "function"

    @property
    def name(self) -> str:
        return self.function

    def describe(self) -> str:
        env = ", ".join(f"{k}={v}" for k, v in sorted(self.environment.items())) or "no environment"
        return f"Lambda function {self.function} ({self.spec.handler}, {self.spec.memory} MB, " \
               f"{self.spec.timeout} s; {env})"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        from scones.deploy.packaging import build_zip
        from scones.deploy.workflow import ensure_function

        arn, action = ensure_function(run.client("lambda"), name=self.function, spec=self.spec,
                                      zip_bytes=build_zip(self.spec), role_arn=str(self.role_arn),
                                      environment=dict(self.environment), progress=run.progress, sleep=run.sleep)
        run.say(f"Lambda function {self.function}: {action}")
        entry["arn"] = arn
        return {"arn": arn}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        gone = _tolerating(lambda: run.client("lambda").delete_function(FunctionName=entry["name"]),
                           "ResourceNotFoundException")
        return f"Lambda function {entry.get('arn') or entry['name']}" if gone else None


@dataclass(frozen=True, kw_only=True)
class Concurrency(Resource):
    """A function's reserved concurrency (0: none); it goes with the function."""
    function: str
    concurrency: int
    kind: ClassVar[str] = "concurrency"
    recorded: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.function

    def describe(self) -> str:
        return f"reserved concurrency of {self.function}: {self.concurrency or 'none'}"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        reserved = scaling.reserve_classifier_concurrency(run.client("lambda"), self.function, self.concurrency,
                                                          run.progress)
        return {"concurrency": reserved}


@dataclass(frozen=True, kw_only=True)
class StateMachine(Resource):
    machine: str
    role_arn: str | Ref
    function_arns: Mapping[str, str | Ref]   # "serializeImageData" -> ARN
    kind: ClassVar[str] = "state-machine"

    @property
    def name(self) -> str:
        return self.machine

    def describe(self) -> str:
        return f"Step Functions state machine {self.machine} (STANDARD) chaining {', '.join(self.function_arns)}"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        from scones.deploy.workflow import ensure_state_machine
        from scones.state_machine.render import render_definition

        arn, action = ensure_state_machine(run.client("stepfunctions"), name=self.machine,
                                           definition=render_definition({k: str(v) for k, v in self.function_arns.items()}),
                                           role_arn=str(self.role_arn), progress=run.progress, sleep=run.sleep)
        run.say(f"state machine {self.machine}: {action}")
        entry["arn"] = arn
        return {"arn": arn}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        from scones.deploy.workflow import find_state_machine_arn

        client = run.client("stepfunctions")
        arn = entry.get("arn") or find_state_machine_arn(client, entry["name"])
        if not arn:
            return None
        gone = _tolerating(lambda: client.delete_state_machine(stateMachineArn=arn),
                           "StateMachineDoesNotExist", "ResourceNotFound")
        return f"state machine {arn}" if gone else None


# --- EventBridge, SNS, CloudWatch ------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Rule(Resource):
    """An EventBridge rule (event pattern or schedule) with one target; `invoke_statement`: the target is a
    function, which gets a resource policy letting this rule alone invoke it."""
    rule: str
    description: str
    target: Mapping[str, Any]
    pattern: Mapping[str, Any] | None = None
    schedule: str | None = None
    invoke_statement: str | None = None
    kind: ClassVar[str] = "rule"

    @property
    def name(self) -> str:
        return self.rule

    def describe(self) -> str:
        when = f"on {self.schedule}" if self.schedule else f"on {json.dumps(self.pattern, sort_keys=True)}"
        role = f" (role {self.target['RoleArn']})" if self.target.get("RoleArn") else ""
        return f"EventBridge rule {self.rule} {when} -> {self.target['Arn']}{role}"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        events = run.client("events")
        target = {key: (str(value) if isinstance(value, Ref) else value) for key, value in self.target.items()}
        if self.schedule:
            arn = events.put_rule(Name=self.rule, ScheduleExpression=self.schedule, State="ENABLED",
                                  Description=self.description)["RuleArn"]
            failed = events.put_targets(Rule=self.rule, Targets=[target]).get("FailedEntries")
            if failed:
                raise DeployError(f"EventBridge refused target {target['Id']} of rule {self.rule}: {failed}")
        else:
            arn = runs.ensure_rule(events, name=self.rule, pattern=dict(self.pattern or {}),
                                   description=self.description, target=target)
        entry["arn"] = arn
        if self.schedule:
            entry["schedule"] = self.schedule
        if self.invoke_statement:
            runs.allow_rule_to_invoke(run.client("lambda"), function=target["Arn"],
                                      statement_id=self.invoke_statement, rule_arn=arn)
        run.say(f"EventBridge rule {self.rule}: -> {target['Arn']}")
        return {"arn": arn}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        events = run.client("events")

        def delete_rule() -> None:
            targets = [target["Id"] for target in events.list_targets_by_rule(Rule=entry["name"]).get("Targets", [])]
            if targets:
                events.remove_targets(Rule=entry["name"], Ids=targets)
            events.delete_rule(Name=entry["name"])

        return f"EventBridge rule {entry['name']}" if _tolerating(delete_rule, "ResourceNotFoundException") else None


@dataclass(frozen=True, kw_only=True)
class BucketEvents(Resource):
    """The bucket sends its events to EventBridge (its other notifications kept); turned off at destroy only
    when this deploy turned it on."""
    bucket: str
    kind: ClassVar[str] = "bucket-events"

    @property
    def name(self) -> str:
        return self.bucket

    def describe(self) -> str:
        return f"bucket {self.bucket} sends its events to EventBridge"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        if runs.enable_bucket_events(run.client("s3"), self.bucket):
            entry["enabled_here"] = True
            run.say(f"bucket {self.bucket}: EventBridge notifications turned on")
        return {}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        if not entry.get("enabled_here"):
            return None
        runs.disable_bucket_events(run.client("s3"), entry["name"])
        return f"EventBridge notifications of bucket {entry['name']}"


@dataclass(frozen=True, kw_only=True)
class Topic(Resource):
    topic: str
    kind: ClassVar[str] = "topic"

    @property
    def name(self) -> str:
        return self.topic

    def describe(self) -> str:
        return f"SNS topic {self.topic} (subscribe to it for the alarms)"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        arn = run.client("sns").create_topic(Name=self.topic)["TopicArn"]
        entry["arn"] = arn
        return {"arn": arn}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        if not entry.get("arn"):
            return None
        gone = _tolerating(lambda: run.client("sns").delete_topic(TopicArn=entry["arn"]), "NotFound")
        return f"SNS topic {entry['arn']}" if gone else None


@dataclass(frozen=True, kw_only=True)
class Alarm(Resource):
    alarm: Mapping[str, Any]       # the PutMetricAlarm request
    kind: ClassVar[str] = "alarm"

    @property
    def name(self) -> str:
        return self.alarm["AlarmName"]

    def describe(self) -> str:
        a = self.alarm
        return f"CloudWatch alarm {a['AlarmName']}: {a['MetricName']} {a['ComparisonOperator']} {a['Threshold']} " \
               f"over {a['Period']} s -> {', '.join(str(x) for x in a['AlarmActions'])}"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        request = {key: ([str(v) for v in value] if key.endswith("Actions") else value)
                   for key, value in self.alarm.items()}
        run.client("cloudwatch").put_metric_alarm(**request)
        run.say(f"CloudWatch alarm {self.name}: {self.alarm['MetricName']} {self.alarm['ComparisonOperator']} "
                f"{self.alarm['Threshold']}")
        return {"name": self.name}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        run.client("cloudwatch").delete_alarms(AlarmNames=[entry["name"]])   # an absent name is no error
        return f"CloudWatch alarm {entry['name']}"


@dataclass(frozen=True, kw_only=True)
class LogGroup(Resource):
    """A function's or endpoint's log group: the service makes it on first use; the deploy only deletes it."""
    group: str
    kind: ClassVar[str] = "log-group"

    @property
    def name(self) -> str:
        return self.group

    def describe(self) -> str:
        return f"CloudWatch Logs group {self.group} (made by the service; deleted by destroy)"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        return {}

    @classmethod
    def delete(cls, run: Run, entry: Entry) -> str | None:
        gone = _tolerating(lambda: run.client("logs").delete_log_group(logGroupName=entry["name"]),
                           "ResourceNotFoundException")
        return f"log group {entry['name']}" if gone else None


KINDS: dict[str, type[Resource]] = {kind.kind: kind for kind in (
    Bucket, Dataset, CaptureRestore, ObjectUpload, Role, TrainingJob, Model, EndpointConfig, Endpoint, EndpointRoute,
    Autoscaling, Function, Concurrency, StateMachine, Rule, BucketEvents, Topic, Alarm, LogGroup)}


# --- reading a record ------------------------------------------------------------------------------------

def entries(record: Mapping[str, Any], kind: str) -> list[Entry]:
    return [entry for entry in record.get("resources") or [] if entry.get("kind") == kind]


def entry_with_id(record: Mapping[str, Any], plan_id: str) -> Entry | None:
    return next((entry for entry in reversed(record.get("resources") or []) if entry.get("id") == plan_id), None)


def role_arn(record: Mapping[str, Any], purpose: str) -> str | None:
    return next((e.get("arn") for e in entries(record, "role") if e.get("purpose") == purpose), None)


def monitor_resources(record: Mapping[str, Any], bucket: str, endpoint_name: str) -> monitoring.MonitorResources:
    """The drift monitor's parts, as `scones status` and `scones report` describe them."""
    def arn_of(plan_id: str) -> str | None:
        entry = entry_with_id(record, plan_id)
        return entry.get("arn") if entry else None
    rule = entry_with_id(record, "rule/monitor-schedule")
    return monitoring.MonitorResources(
        function_arn=arn_of("function/monitorDrift"), rule_arn=arn_of("rule/monitor-schedule"),
        topic_arn=arn_of("topic/monitor-alarms"), alarms=[e["name"] for e in entries(record, "alarm")],
        monitor_s3_uri=f"s3://{bucket}/{monitoring.MONITOR_PREFIX}{endpoint_name}/",
        schedule=(rule or {}).get("schedule"))


@dataclass(frozen=True, kw_only=True)
class Baseline(Resource):
    """The drift monitor's baseline.json beside the capture: from a file (`--baseline`, the served model's), or from
    the training job's output.tar.gz beside model.tar.gz; with none, the monitor publishes counts only."""
    bucket: str
    key: str
    source_file: Path | None = None
    model_data: str | Ref | None = None
    kind: ClassVar[str] = "baseline"
    recorded: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def describe(self) -> str:
        source = self.source_file or (f"the training output beside {self.model_data}" if self.model_data else None)
        return f"drift baseline {source or 'none (counts only until one is there)'} -> {self.name}"

    def ensure(self, run: Run, entry: Entry) -> dict[str, Any]:
        from scones.lambdas.drift import checked_baseline

        s3 = run.client("s3")
        baseline = None
        if self.source_file is not None:
            try:
                baseline = checked_baseline(json.loads(Path(self.source_file).read_text()), str(self.source_file))
            except FileNotFoundError:
                raise DeployError(f"baseline {self.source_file} does not exist (training writes baseline.json: "
                                  f"`scones train`)") from None
            except json.JSONDecodeError as error:
                raise DeployError(f"baseline {self.source_file} is not valid JSON ({error})") from None
        elif self.model_data:
            baseline = monitoring.baseline_from_training_output(s3, str(self.model_data))
        if baseline is None:
            run.say(f"monitor baseline: none; the monitor publishes records and share below threshold only until "
                    f"{self.name} exists")
            return {"uri": None}
        s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(baseline).encode(),
                      ContentType="application/json")
        run.say(f"monitor baseline: {self.name}")
        return {"uri": self.name}


KINDS[Baseline.kind] = Baseline
