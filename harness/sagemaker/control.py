"""The SageMaker control plane's operations and stores, as AWS's API reference describes them.

Runs inside LocalStack (no torch): every operation takes the caller (account, region, access key)
and the request as botocore's `sagemaker` model shapes it, and returns the response dict or raises
ApiError with AWS's error code and wording. Endpoints and training jobs are processes of the
project's own Python (endpoint_host.py, training_host.py) that report on their stdout, one JSON
object a line; a thread per process reads those lines and moves the resource's status.

The stores live as long as LocalStack, like LocalStack's own resources (its free edition keeps
none across restarts); the processes are recorded under the sagemaker dir (processes.py) so that
`scones down` stops them even when LocalStack is gone.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from scones import settings
from scones.harness.sagemaker import processes

# The images whose containers we run here, by the ECR repository in their URI: AWS's PyTorch deep learning
# containers, as the SageMaker Python SDK's image_uris.retrieve("pytorch", ...) writes them
# (<registry>.dkr.ecr.<region>.amazonaws.com[.cn]/pytorch-inference:<version>-<cpu|gpu>-py3..).
_ECR = r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
INFERENCE_IMAGE = re.compile(_ECR + r"pytorch-inference:")
TRAINING_IMAGE = re.compile(_ECR + r"pytorch-training:")
RUNNABLE_INFERENCE = "AWS's PyTorch inference images (<account>.dkr.ecr.<region>.amazonaws.com/pytorch-inference:<tag>)"
RUNNABLE_TRAINING = "AWS's PyTorch training images (<account>.dkr.ecr.<region>.amazonaws.com/pytorch-training:<tag>)"
# Local stand-ins for AWS's per-account service quotas (ResourceLimitExceeded): each endpoint instance and
# training job is a process with a model in memory on this machine.
ENDPOINT_INSTANCE_LIMIT = settings.whole_number(processes.ENDPOINT_INSTANCES_ENV, 8)
TRAINING_JOB_LIMIT = settings.whole_number(processes.TRAINING_JOBS_ENV, 2)
ROUTE_SWITCH_GRACE_S = 1.0
ENDPOINT_HOST_MODULE = "scones.harness.sagemaker.endpoint_host"
# One endpoint host kept started ahead of need (endpoint_host.py --spare): CreateEndpoint -> InService is then
# the model's load and the server's start, without the interpreter's and torch's (most of the time). "0": none.
SPARE_ENDPOINT_HOST = settings.named(processes.SPARE_ENDPOINT_ENV) != "0"
SPARE_AT_START = settings.named(processes.SPARE_ENDPOINT_ENV) == processes.SPARE_AT_START
SPARE_KIND = "endpoint-spare"
# Variables read when an interpreter or torch starts, not later: a container Environment that sets one gets a
# fresh endpoint host, since a spare has started already.
START_TIME_PREFIXES = ("OMP_", "MKL_", "KMP_", "GOMP_", "PYTHON", "LD_", "MALLOC_", "TORCH_", "CUDA_")


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


@dataclass(frozen=True)
class Caller:
    account: str
    region: str
    access_key: str
    gateway: str          # LocalStack's own URL: what the processes we start use as AWS_ENDPOINT_URL
    secret_key: str = "test"
    session_token: str | None = None   # a role session's (Environment.as_role)


def now() -> datetime:
    return datetime.now(timezone.utc)


def arn(caller: Caller, kind: str, name: str) -> str:
    # SageMaker's ARNs hold the name in lower case (e.g. arn:aws:sagemaker:us-east-1:123:endpoint/my-endpoint).
    return f"arn:aws:sagemaker:{caller.region}:{caller.account}:{kind}/{name.lower()}"


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise validation(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


# --- what the operations need from outside: S3 and process spawning ------------------------------

class Environment:
    """S3 (LocalStack's own in-memory client) and the processes we start; a test may replace either."""

    def __init__(self, root: Path, s3_for: Callable[[Caller], Any], python: str | None,
                 assume_role: Callable[[Caller, str], Caller] | None = None) -> None:
        self.root = root
        self.s3_for = s3_for
        self.python = python
        self.assume_role = assume_role
        self._spare_lock = threading.Lock()
        self._spare: tuple[subprocess.Popen, processes.ProcessRecord] | None = None
        self._stops_at_exit = False
        self._serves_endpoints: bool | None = None

    def as_role(self, caller: Caller, role_arn: str | None) -> Caller:
        """Who SageMaker acts as for a job or a model: a session of the execution role it was given (RoleArn,
        ExecutionRoleArn), so that reading the data and the model, writing the artifact and the capture are
        checked against that role's policy (harness/iam/gateway.py) as on AWS. Without a way to assume roles
        (a test's environment), the caller itself."""
        if not role_arn or self.assume_role is None:
            return caller
        try:
            return self.assume_role(caller, role_arn)
        except Exception:   # STS's refusal, whatever its shape: AWS's CreateModel/CreateTrainingJob answer
            raise validation(f"Could not assume role {role_arn}. Please ensure that the role exists and allows "
                             "principal 'sagemaker.amazonaws.com' to assume the role.") from None

    def serves_endpoints(self) -> bool:
        """Whether endpoint hosts can run here: a Python with torch (the compose LocalStack container has none)."""
        if self._serves_endpoints is None:
            check = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"
            try:
                self._serves_endpoints = bool(self.python) and subprocess.run(
                    [str(self.python), "-c", check], capture_output=True, timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                self._serves_endpoints = False
        return self._serves_endpoints

    def capture_spool(self, caller: Caller, endpoint_name: str) -> Path:
        """The capture spools of an endpoint name: kept across its deploys and hosts, so that a host which replaces
        a killed one sends what that one spooled but could not upload."""
        named = settings.named(processes.CAPTURE_SPOOL_ENV)
        root = Path(named) if named else self.root / "capture-spool" / caller.account / caller.region
        return root / endpoint_name

    def object_exists(self, caller: Caller, uri: str) -> bool:
        bucket, key = split_s3(uri)
        try:
            self.s3_for(caller).head_object(Bucket=bucket, Key=key)
            return True
        except Exception:   # NoSuchKey, NoSuchBucket, 403: all "cannot find" to the caller, as on AWS
            return False

    def download(self, caller: Caller, uri: str, target: Path) -> None:
        bucket, key = split_s3(uri)
        try:
            body = self.s3_for(caller).get_object(Bucket=bucket, Key=key)["Body"]
            with open(target, "wb") as file:
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    file.write(chunk)
        except Exception as error:   # NoSuchKey, NoSuchBucket, ...: AWS's one FailureReason for them all
            raise _Unservable(_download_failure(bucket, key)) from error

    def process_env(self, caller: Caller) -> dict[str, str]:
        return {**self._inherited_env(), **self._caller_env(caller)}

    @staticmethod
    def _inherited_env() -> dict[str, str]:
        inherited = {key: value for key, value in os.environ.items()
                     if not key.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV", "LOCALSTACK_", "GATEWAY_"))}
        return {**inherited, "PYTHONUNBUFFERED": "1"}

    @staticmethod
    def _caller_env(caller: Caller) -> dict[str, str]:
        session = {"AWS_SESSION_TOKEN": caller.session_token} if caller.session_token else {}
        return {"AWS_ENDPOINT_URL": caller.gateway, "AWS_ACCESS_KEY_ID": caller.access_key,
                "AWS_SECRET_ACCESS_KEY": caller.secret_key, **session, "AWS_REGION": caller.region,
                "AWS_DEFAULT_REGION": caller.region}

    def _python(self, kind: str) -> str:
        if not self.python:
            raise RuntimeError(f"no Python with torch to run {kind}s: ${processes.PYTHON_ENV} is unset "
                               "(scones up sets it to the project's Python)")
        return self.python

    def _start(self, kind: str, name: str, arguments: list[str], log: Path, env: dict[str, str], cwd: Path,
               stdin: int) -> tuple[subprocess.Popen, processes.ProcessRecord]:
        """Start and record a process of ours (recorded before it can do anything: `scones down` finds it)."""
        if processes.PART_ENV in env:
            env = {**env, processes.PART_ENV: processes.PART_NAME}
        with open(log, "ab") as log_file:
            process = subprocess.Popen([self._python(kind), "-m", *arguments], stdin=stdin, stdout=subprocess.PIPE,
                                       stderr=log_file, env=env, cwd=cwd, start_new_session=True)
        entry = processes.ProcessRecord(kind=kind, name=name, pid=process.pid, started=time.time(), log=str(log))
        processes.record(self.root, entry)
        return process, entry

    def spawn(self, caller: Caller, kind: str, name: str, module: str, spec: dict, folder: Path,
              extra_env: dict[str, str] | None = None) -> "HostProcess":
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(json.dumps(spec, default=str))
        process, entry = self._start(kind, name, [module, str(folder / "spec.json")], folder / f"{kind}.log",
                                     {**self.process_env(caller), **(extra_env or {})}, folder, subprocess.DEVNULL)
        return HostProcess(process, entry, self.root)

    # --- the spare endpoint host: an endpoint's start without the interpreter's and torch's ---------------

    def warm_spare(self) -> None:
        """Have a spare endpoint host starting or waiting (one at most), unless spares are off or there is no
        Python to run one. Called as endpoints come near (CreateTrainingJob, CreateModel, CreateEndpointConfig)
        and after each claimed spare has answered, so the next does not compete with it for the CPU."""
        if not SPARE_ENDPOINT_HOST or not self.python:
            return
        with self._spare_lock:
            if self._spare is not None and self._spare[0].poll() is None:
                return
            self._forget_spare()
            folder = self.root / "spares"
            folder.mkdir(parents=True, exist_ok=True)
            log = folder / f"spare-{time.time_ns()}.log"
            try:
                self._spare = self._start(SPARE_KIND, "spare", [ENDPOINT_HOST_MODULE, "--spare"], log,
                                          self._inherited_env(), folder, subprocess.PIPE)
            except (RuntimeError, OSError):
                self._spare = None   # a cold start still serves the endpoint
                return
            if not self._stops_at_exit:
                # LocalStack's stop ends its interpreter: the spare goes then, not a moment later at the end of its
                # stdin (which is also how it goes when LocalStack is killed).
                atexit.register(self.stop_spare)
                self._stops_at_exit = True

    def serve_endpoint(self, caller: Caller, name: str, spec: dict, folder: Path) -> "HostProcess":
        """The endpoint host for spec: the spare, handed its assignment, when one runs and the container's
        Environment sets nothing read at an interpreter's start; else a fresh one."""
        environment = spec.get("environment") or {}
        late = not any(key.startswith(START_TIME_PREFIXES) for key in environment)
        with self._spare_lock:
            spare, self._spare = (self._spare, None) if late else (None, self._spare)
        if spare is not None and spare[0].poll() is None:
            process, spare_entry = spare
            (folder / "spec.json").write_text(json.dumps(spec, default=str))
            log = folder / "endpoint.log"
            entry = processes.ProcessRecord(kind="endpoint", name=name, pid=process.pid, started=spare_entry.started,
                                            log=str(log))
            processes.record(self.root, entry)
            processes.forget(self.root, spare_entry)
            assignment = {"spec": str(folder / "spec.json"), "log": str(log), "environ": self._caller_env(caller)}
            try:
                assert process.stdin is not None
                process.stdin.write((json.dumps(assignment) + "\n").encode())
                process.stdin.close()
                Path(spare_entry.log).unlink(missing_ok=True)
                return HostProcess(process, entry, self.root)
            except OSError:   # it died just now: a fresh one instead
                process.wait()
                processes.forget(self.root, entry)
        elif spare is not None:   # it died while it waited (killed): its record goes, a fresh host serves
            self._forget(spare)
        return self.spawn(caller, "endpoint", name, ENDPOINT_HOST_MODULE, spec, folder, extra_env=environment)

    def _forget_spare(self) -> None:
        if self._spare is not None:
            self._forget(self._spare)
            self._spare = None

    def _forget(self, spare: tuple[subprocess.Popen, processes.ProcessRecord]) -> None:
        process, entry = spare
        process.wait()
        processes.forget(self.root, entry)
        Path(entry.log).unlink(missing_ok=True)

    def stop_spare(self, timeout_s: float = 5.0) -> None:
        """LocalStack is stopping: the spare goes with it (an endpoint it serves already is no spare)."""
        with self._spare_lock:
            if self._spare is None:
                return
            process = self._spare[0]
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
            self._forget_spare()


class HostProcess:
    """A process we started: its report lines, its stop, and its record's removal when it ends."""

    def __init__(self, process: subprocess.Popen, entry: processes.ProcessRecord, root: Path) -> None:
        self.process, self.entry, self.root = process, entry, root
        self.stopped = False   # by us or by `scones down` (processes.stop_all): its exit is no loss to replace

    def reports(self) -> Iterable[dict]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict):
                yield report

    def wait(self) -> int:
        code = self.process.wait()
        self.stopped = self.stopped or processes.stopping(self.root, self.entry)
        processes.forget(self.root, self.entry)
        return code

    def terminate(self) -> None:
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(Path(self.entry.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _start_thread(target: Callable[[], None], name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


# --- listing, as every List* call does it -------------------------------------------------------

def list_page(items: list[dict], request: dict, *, name_key: str, status_key: str | None, result_key: str) -> dict:
    """NameContains, StatusEquals, CreationTimeBefore/After, SortBy (Name|CreationTime|Status), SortOrder,
    MaxResults and NextToken as the List* operations of the API reference define them."""
    chosen = [item for item in items
              if request.get("NameContains", "").lower() in item[name_key].lower()
              and (status_key is None or request.get("StatusEquals") in (None, item[status_key]))
              and (request.get("CreationTimeBefore") is None or item["CreationTime"] < request["CreationTimeBefore"])
              and (request.get("CreationTimeAfter") is None or item["CreationTime"] > request["CreationTimeAfter"])]
    sort_key = {"Name": name_key, "Status": status_key or name_key}.get(request.get("SortBy", "CreationTime"), "CreationTime")
    chosen.sort(key=lambda item: item[sort_key], reverse=request.get("SortOrder", "Descending") == "Descending")
    start = 0
    if request.get("NextToken"):
        try:
            start = int(request["NextToken"])
        except ValueError:
            raise validation(f"Invalid pagination token {request['NextToken']!r}.") from None
    size = request.get("MaxResults") or 10
    page = chosen[start:start + size]
    response: dict[str, Any] = {result_key: page}
    if start + size < len(chosen):
        response["NextToken"] = str(start + size)
    return response


# --- the control plane ----------------------------------------------------------------------------

@dataclass
class Endpoint:
    record: dict                                   # DescribeEndpoint's answer
    host: HostProcess | None = None                # the endpoint server's process now serving
    config: dict = field(default_factory=dict)     # the endpoint config it serves


class ControlPlane:
    def __init__(self, environment: Environment, route: Callable[[str, str | None], None]) -> None:
        """route(name, url) points the sagemaker-runtime route of an endpoint name at a server (None: remove)."""
        self.environment = environment
        self.route = route
        self.lock = threading.RLock()
        self.models: dict[tuple[str, str, str], dict] = {}
        self.endpoint_configs: dict[tuple[str, str, str], dict] = {}
        self.endpoints: dict[tuple[str, str, str], Endpoint] = {}
        self.training_jobs: dict[tuple[str, str, str], dict] = {}
        self.training_hosts: dict[tuple[str, str, str], HostProcess] = {}

    @staticmethod
    def key(caller: Caller, name: str) -> tuple[str, str, str]:
        return caller.account, caller.region, name

    def _mine(self, store: dict, caller: Caller) -> list:
        return [value for (account, region, _), value in store.items() if (account, region) == (caller.account, caller.region)]

    # --- models ---------------------------------------------------------------------------------

    def create_model(self, caller: Caller, request: dict) -> dict:
        name = request["ModelName"]
        model_arn = arn(caller, "model", name)
        containers = [request["PrimaryContainer"]] if request.get("PrimaryContainer") else request.get("Containers") or []
        if not containers:
            raise validation("Either PrimaryContainer or Containers must be specified.")
        with self.lock:
            if self.key(caller, name) in self.models:
                raise validation(f'Cannot create already existing model "{model_arn}".')
        for container in containers:
            url = container.get("ModelDataUrl")
            reader = self.environment.as_role(caller, request.get("ExecutionRoleArn"))
            if url and not self.environment.object_exists(reader, url):
                raise validation(f"Could not find model data at {url}.")
        record = {**request, "ModelArn": model_arn, "CreationTime": now()}
        record.pop("Tags", None)
        with self.lock:
            self.models[self.key(caller, name)] = record
        self.environment.warm_spare()   # an endpoint is likely to follow
        return {"ModelArn": model_arn}

    def _model(self, caller: Caller, name: str) -> dict:
        model = self.models.get(self.key(caller, name))
        if model is None:
            raise validation(f'Could not find model "{arn(caller, "model", name)}".')
        return model

    def describe_model(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            return dict(self._model(caller, request["ModelName"]))

    def delete_model(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            self._model(caller, request["ModelName"])
            del self.models[self.key(caller, request["ModelName"])]
        return {}

    def list_models(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            items = [{"ModelName": m["ModelName"], "ModelArn": m["ModelArn"], "CreationTime": m["CreationTime"]}
                     for m in self._mine(self.models, caller)]
        return list_page(items, request, name_key="ModelName", status_key=None, result_key="Models")

    # --- endpoint configs -----------------------------------------------------------------------

    def create_endpoint_config(self, caller: Caller, request: dict) -> dict:
        name = request["EndpointConfigName"]
        config_arn = arn(caller, "endpoint-config", name)
        variants = request["ProductionVariants"]
        with self.lock:
            if self.key(caller, name) in self.endpoint_configs:
                raise validation(f'Cannot create already existing endpoint configuration "{config_arn}".')
            seen: set[str] = set()
            for variant in variants:
                if variant["VariantName"] in seen:
                    raise validation(f"Variant name {variant['VariantName']!r} appears more than once in "
                                     "ProductionVariants; each variant name must be unique.")
                seen.add(variant["VariantName"])
                if variant.get("ModelName"):
                    self._model(caller, variant["ModelName"])
        capture = request.get("DataCaptureConfig")
        if capture:
            split_s3(capture["DestinationS3Uri"])
            modes = [option["CaptureMode"] for option in capture.get("CaptureOptions", [])]
            if not modes:
                raise validation("DataCaptureConfig.CaptureOptions must hold at least one CaptureMode (Input, Output).")
        record = {**request, "EndpointConfigArn": config_arn, "CreationTime": now()}
        record.pop("Tags", None)
        with self.lock:
            self.endpoint_configs[self.key(caller, name)] = record
        self.environment.warm_spare()
        return {"EndpointConfigArn": config_arn}

    def _endpoint_config(self, caller: Caller, name: str) -> dict:
        config = self.endpoint_configs.get(self.key(caller, name))
        if config is None:
            raise validation(f'Could not find endpoint configuration "{arn(caller, "endpoint-config", name)}".')
        return config

    def describe_endpoint_config(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            return dict(self._endpoint_config(caller, request["EndpointConfigName"]))

    def delete_endpoint_config(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            self._endpoint_config(caller, request["EndpointConfigName"])
            del self.endpoint_configs[self.key(caller, request["EndpointConfigName"])]
        return {}

    def list_endpoint_configs(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            items = [{"EndpointConfigName": c["EndpointConfigName"], "EndpointConfigArn": c["EndpointConfigArn"],
                      "CreationTime": c["CreationTime"]} for c in self._mine(self.endpoint_configs, caller)]
        return list_page(items, request, name_key="EndpointConfigName", status_key=None, result_key="EndpointConfigs")

    # --- endpoints --------------------------------------------------------------------------------

    def create_endpoint(self, caller: Caller, request: dict) -> dict:
        name = request["EndpointName"]
        endpoint_arn = arn(caller, "endpoint", name)
        with self.lock:
            if self.key(caller, name) in self.endpoints:
                raise validation(f'Cannot create already existing endpoint "{endpoint_arn}".')
            config = self._endpoint_config(caller, request["EndpointConfigName"])
            self._check_instances(caller, config, replacing=None)
            created = now()
            endpoint = Endpoint(record={
                "EndpointName": name, "EndpointArn": endpoint_arn, "EndpointConfigName": config["EndpointConfigName"],
                "EndpointStatus": "Creating", "CreationTime": created, "LastModifiedTime": created,
            }, config=config)
            self.endpoints[self.key(caller, name)] = endpoint
        self._deploy(caller, endpoint, config, updating=False)
        return {"EndpointArn": endpoint_arn}

    def _check_instances(self, caller: Caller, config: dict, replacing: Endpoint | None) -> None:
        wanted = sum(v.get("InitialInstanceCount", 1) for v in config["ProductionVariants"])
        in_use = sum(v.get("InitialInstanceCount", 1) for endpoint in self._mine(self.endpoints, caller)
                     if endpoint is not replacing for v in endpoint.config.get("ProductionVariants", []))
        if in_use + wanted > ENDPOINT_INSTANCE_LIMIT:
            instance_type = config["ProductionVariants"][0].get("InstanceType", "ml.m5.large")
            raise ApiError("ResourceLimitExceeded",
                           f"The account-level service limit '{instance_type} for endpoint usage' is "
                           f"{ENDPOINT_INSTANCE_LIMIT} Instances, with current utilization of {in_use} Instances and a "
                           f"request delta of {wanted} Instances. Please use AWS Service Quotas to request an increase "
                           "for this quota. (Locally: $SCONES_SAGEMAKER_ENDPOINT_INSTANCES, each instance a process.)")

    def _serving_spec(self, caller: Caller, endpoint_name: str, config: dict) -> dict:
        """What endpoint_host.py needs: the first variant's model artifact and the config's capture settings."""
        variant = config["ProductionVariants"][0]
        model = self.models.get(self.key(caller, variant.get("ModelName", "")))
        if model is None:
            raise _Unservable(f"The model {variant.get('ModelName')!r} of variant {variant['VariantName']} no longer exists.")
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        image = container.get("Image", "")
        if not INFERENCE_IMAGE.match(image):
            raise _Unservable(f"The image '{image}' of model {model['ModelName']} cannot run locally: scones serves "
                              f"{RUNNABLE_INFERENCE} with its own endpoint server.")
        url = container.get("ModelDataUrl")
        if not url:
            raise _Unservable(f"Model {model['ModelName']} has no ModelDataUrl: scones serves a model.tar.gz from S3.")
        return {"endpoint_name": endpoint_name, "variant_name": variant["VariantName"], "model_data_url": url,
                "environment": container.get("Environment") or {}, "data_capture": config.get("DataCaptureConfig"),
                "execution_role_arn": model.get("ExecutionRoleArn"),
                "capture_spool": str(self.environment.capture_spool(caller, endpoint_name))}

    def _deploy(self, caller: Caller, endpoint: Endpoint, config: dict, *, updating: bool) -> None:
        """In a thread: what a hosting instance does before /ping answers (download the model, start the
        server), then _deployed with its URL or the FailureReason."""
        name = endpoint.record["EndpointName"]

        def deploy() -> None:
            host = None
            try:
                spec = self._serving_spec(caller, name, config)
                folder = self.environment.root / "endpoints" / caller.account / caller.region / name / str(time.time_ns())
                folder.mkdir(parents=True)
                spec["model"] = str(folder / "model.tar.gz")
                role = self.environment.as_role(caller, spec["execution_role_arn"])
                self.environment.download(role, spec["model_data_url"], Path(spec["model"]))
                host = self.environment.serve_endpoint(role, name, spec, folder)
            except (_Unservable, ApiError, RuntimeError, OSError) as error:
                self._deployed(caller, endpoint, config, None, None, str(error), updating)
                return
            url, reason = None, None
            for report in host.reports():
                url, reason = report.get("url"), report.get("error")
                break
            if url is None and reason is None:
                reason = f"The endpoint server exited before it was ready: {host.log_tail() or 'no output'}"
            if url is None:
                host.terminate()
            self._deployed(caller, endpoint, config, host if url else None, url, reason, updating)
            self.environment.warm_spare()   # now, not while this one started: on 2 cores they would share them
            host.wait()
            if url is not None:
                self._replace_if_lost(caller, endpoint, host)
        _start_thread(deploy, f"sagemaker-endpoint-{name}")

    def _replace_if_lost(self, caller: Caller, endpoint: Endpoint, host: HostProcess) -> None:
        """The host serving an endpoint exited though nobody stopped it (killed, crashed): start another with the
        same config (and capture spool), as AWS replaces an instance that fails its health checks. The endpoint
        stays InService meanwhile; requests fail until the replacement answers, and a caller's retries carry them."""
        with self.lock:
            lost = (endpoint.host is host and not host.stopped and endpoint.record["EndpointStatus"] == "InService"
                    and self.endpoints.get(self.key(caller, endpoint.record["EndpointName"])) is endpoint)
            if not lost:
                return
            endpoint.host = None
            config = endpoint.config
        self._deploy(caller, endpoint, config, updating=True)

    def _deployed(self, caller: Caller, endpoint: Endpoint, config: dict, host: HostProcess | None, url: str | None,
                  reason: str | None, updating: bool) -> None:
        """The new server is ready (url) or could not start (reason): switch traffic to it, then stop the old."""
        with self.lock:
            deleted = endpoint.record["EndpointStatus"] == "Deleting"
            if deleted and host is not None:
                host.terminate()
                return
            record = endpoint.record
            record["LastModifiedTime"] = now()
            if url is None:
                record["FailureReason"] = reason
                # A failed update rolls back: the old config keeps serving (UpdateEndpoint in the API reference).
                record["EndpointStatus"] = "InService" if updating else "Failed"
                return
            old = endpoint.host
            self.route(record["EndpointName"], url)
            endpoint.host, endpoint.config = host, config
            record.pop("FailureReason", None)
            record.pop("DataCaptureConfig", None)
            record.update(EndpointStatus="InService", EndpointConfigName=config["EndpointConfigName"],
                          ProductionVariants=_variants(config), **_capture_description(config))
        if old is not None:
            # After the route moved, and a moment later, so that a request which read the old URL just before
            # the switch still connects: the old server then finishes what it has in flight (graceful stop).
            threading.Timer(ROUTE_SWITCH_GRACE_S, old.terminate).start()

    def _endpoint(self, caller: Caller, name: str) -> Endpoint:
        endpoint = self.endpoints.get(self.key(caller, name))
        if endpoint is None:
            raise validation(f'Could not find endpoint "{arn(caller, "endpoint", name)}".')
        return endpoint

    def describe_endpoint(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            return dict(self._endpoint(caller, request["EndpointName"]).record)

    def update_endpoint(self, caller: Caller, request: dict) -> dict:
        name = request["EndpointName"]
        with self.lock:
            endpoint = self._endpoint(caller, name)
            config = self._endpoint_config(caller, request["EndpointConfigName"])
            if endpoint.record["EndpointStatus"] != "InService":
                raise validation(f'Cannot update in-progress endpoint "{endpoint.record["EndpointArn"]}".')
            self._check_instances(caller, config, replacing=endpoint)
            endpoint.record.update(EndpointStatus="Updating", LastModifiedTime=now())
        self._deploy(caller, endpoint, config, updating=True)
        return {"EndpointArn": endpoint.record["EndpointArn"]}

    def delete_endpoint(self, caller: Caller, request: dict) -> dict:
        name = request["EndpointName"]
        with self.lock:
            endpoint = self._endpoint(caller, name)
            endpoint.record.update(EndpointStatus="Deleting", LastModifiedTime=now())
            self.route(name, None)
            del self.endpoints[self.key(caller, name)]
        if endpoint.host is not None:
            endpoint.host.terminate()
        return {}

    def list_endpoints(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            items = [{key: e.record[key] for key in ("EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime",
                                                     "EndpointStatus")} for e in self._mine(self.endpoints, caller)]
        return list_page(items, request, name_key="EndpointName", status_key="EndpointStatus", result_key="Endpoints")

    # --- training jobs ---------------------------------------------------------------------------

    def create_training_job(self, caller: Caller, request: dict) -> dict:
        name = request["TrainingJobName"]
        job_arn = arn(caller, "training-job", name)
        runner = self.environment.as_role(caller, request.get("RoleArn"))   # refused before the job exists, as on AWS
        with self.lock:
            if self.key(caller, name) in self.training_jobs:
                raise ApiError("ResourceInUse", "Training job names must be unique within an AWS account and region, "
                                                f"and a training job with this name already exists ({job_arn})")
            running = [j for j in self._mine(self.training_jobs, caller) if j["TrainingJobStatus"] in ("InProgress", "Stopping")]
            if len(running) >= TRAINING_JOB_LIMIT:
                instance_type = request["ResourceConfig"].get("InstanceType", "ml.m5.xlarge")
                raise ApiError("ResourceLimitExceeded",
                               f"The account-level service limit '{instance_type} for training job usage' is "
                               f"{TRAINING_JOB_LIMIT} Instances, with current utilization of {len(running)} Instances and "
                               "a request delta of 1 Instances. Please use AWS Service Quotas to request an increase "
                               "for this quota. (Locally: $SCONES_SAGEMAKER_TRAINING_JOBS, each job a process.)")
            created = now()
            record = {**request, "TrainingJobArn": job_arn, "TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting",
                      "CreationTime": created, "LastModifiedTime": created,
                      "SecondaryStatusTransitions": [{"Status": "Starting", "StartTime": created,
                                                      "StatusMessage": "Preparing the instances for training"}]}
            record.pop("Tags", None)
            self.training_jobs[self.key(caller, name)] = record
        image = request["AlgorithmSpecification"].get("TrainingImage", "")
        if not TRAINING_IMAGE.match(image):
            self._job_report(record, {"status": "Failed", "secondary": "Failed",
                                      "failure": f"ClientError: The image '{image}' cannot run locally: scones runs "
                                                 f"{RUNNABLE_TRAINING} with AWS's training toolkit or its port of it."})
            return {"TrainingJobArn": job_arn}
        folder = self.environment.root / "training-jobs" / caller.account / caller.region / name
        try:
            host = self.environment.spawn(runner, "training-job", name, "scones.harness.sagemaker.training_host",
                                          {"request": request, "region": caller.region}, folder)
        except (RuntimeError, OSError) as error:
            self._job_report(record, {"status": "Failed", "secondary": "Failed", "failure": f"InternalServerError: {error}"})
            return {"TrainingJobArn": job_arn}
        with self.lock:
            self.training_hosts[self.key(caller, name)] = host
        # Its model is likely to be served next; the spare's imports cost the job a few seconds of CPU once, and
        # save the endpoint those seconds and more (benchmarks/deploy_local.py).
        self.environment.warm_spare()

        def watch() -> None:
            for report in host.reports():
                self._job_report(record, report)
            code = host.wait()
            if record["TrainingJobStatus"] in ("InProgress", "Stopping"):  # it died without its last word
                self._job_report(record, {"status": "Failed", "secondary": "Failed",
                                          "failure": f"InternalServerError: the training job's process exited with {code}: "
                                                     f"{host.log_tail()}"})
        _start_thread(watch, f"sagemaker-training-{name}")
        return {"TrainingJobArn": job_arn}

    def _job_report(self, record: dict, report: dict) -> None:
        """A line from training_host.py: {"secondary", "message", "status", "failure", "artifact", ...}."""
        with self.lock:
            stamp = now()
            record["LastModifiedTime"] = stamp
            if record["TrainingJobStatus"] == "Stopping" and report.get("secondary") not in (None, "Stopped",
                                                                                             "MaxRuntimeExceeded"):
                return
            if report.get("secondary") and report["secondary"] != record["SecondaryStatus"]:
                transitions = record["SecondaryStatusTransitions"]
                transitions[-1]["EndTime"] = stamp
                transitions.append({"Status": report["secondary"], "StartTime": stamp,
                                    "StatusMessage": report.get("message", "")})
                record["SecondaryStatus"] = report["secondary"]
                if report["secondary"] in ("Completed", "Failed", "Stopped", "MaxRuntimeExceeded"):
                    transitions[-1]["EndTime"] = stamp
            if report.get("training_start"):
                record["TrainingStartTime"] = stamp
            if report.get("artifact"):
                record["ModelArtifacts"] = {"S3ModelArtifacts": report["artifact"]}
            if report.get("failure"):
                record["FailureReason"] = report["failure"]
            if report.get("status"):
                record["TrainingJobStatus"] = report["status"]
                if report["status"] in ("Completed", "Failed", "Stopped"):
                    record["TrainingEndTime"] = stamp
                    started = record.get("TrainingStartTime", record["CreationTime"])
                    seconds = max(1, int((stamp - started).total_seconds()))
                    record["TrainingTimeInSeconds"] = record["BillableTimeInSeconds"] = seconds

    def _job(self, caller: Caller, name: str) -> dict:
        job = self.training_jobs.get(self.key(caller, name))
        if job is None:
            raise validation("Requested resource not found.")
        return job

    def describe_training_job(self, caller: Caller, request: dict) -> dict:
        with self.lock:
            job = self._job(caller, request["TrainingJobName"])
            return {**job, "SecondaryStatusTransitions": [dict(t) for t in job["SecondaryStatusTransitions"]]}

    def stop_training_job(self, caller: Caller, request: dict) -> dict:
        name = request["TrainingJobName"]
        with self.lock:
            job = self._job(caller, name)
            if job["TrainingJobStatus"] != "InProgress":
                raise validation(f"The training job status is {job['TrainingJobStatus']}. Stopping a training job is "
                                 "only allowed when its status is InProgress.")
            self._job_report(job, {"status": "Stopping", "secondary": "Stopping", "message": "Stopping the training job"})
            host = self.training_hosts.get(self.key(caller, name))
        if host is not None:
            host.terminate()
        return {}

    def list_training_jobs(self, caller: Caller, request: dict) -> dict:
        keys = ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime", "LastModifiedTime",
                "TrainingJobStatus", "SecondaryStatus")
        with self.lock:
            items = [{key: job[key] for key in keys if key in job} for job in self._mine(self.training_jobs, caller)]
        return list_page(items, request, name_key="TrainingJobName", status_key="TrainingJobStatus",
                         result_key="TrainingJobSummaries")

    # --- everything we started ------------------------------------------------------------------

    def shutdown(self) -> None:
        with self.lock:
            hosts = [e.host for e in self.endpoints.values() if e.host] + list(self.training_hosts.values())
        for host in hosts:
            host.terminate()
        self.environment.stop_spare()


class _Unservable(Exception):
    """The endpoint cannot be served here; the message is the endpoint's FailureReason."""


def _download_failure(bucket: str, key: str) -> str:
    return (f"Failed to download model data(bucket: {bucket}, key: {key}). Please ensure that there is an object "
            "located at the URL and that the role passed to CreateModel has permissions to download the model.")


def _variants(config: dict) -> list[dict]:
    return [{"VariantName": v["VariantName"], "CurrentWeight": v.get("InitialVariantWeight", 1.0),
             "DesiredWeight": v.get("InitialVariantWeight", 1.0), "CurrentInstanceCount": v.get("InitialInstanceCount", 1),
             "DesiredInstanceCount": v.get("InitialInstanceCount", 1)} for v in config["ProductionVariants"]]


def _capture_description(config: dict) -> dict:
    capture = config.get("DataCaptureConfig")
    if not capture:
        return {}
    return {"DataCaptureConfig": {
        "EnableCapture": capture.get("EnableCapture", True),
        "CaptureStatus": "Started" if capture.get("EnableCapture", True) else "Stopped",
        "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
        "DestinationS3Uri": capture["DestinationS3Uri"],
        **({"KmsKeyId": capture["KmsKeyId"]} if capture.get("KmsKeyId") else {}),
    }}


def default_python() -> str | None:
    """$SCONES_SAGEMAKER_PYTHON, else the .venv of the checkout this scones lives in, if any."""
    named = settings.named(processes.PYTHON_ENV)
    if named:
        return named
    checkout_venv = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    return str(checkout_venv) if checkout_venv.exists() else None


def default_root() -> Path:
    """$SCONES_SAGEMAKER_DIR, else <LocalStack home>/sagemaker (LocalStack's FILESYSTEM_ROOT is <home>/filesystem)."""
    named = settings.named(processes.SAGEMAKER_DIR_ENV)
    if named:
        return Path(named)
    filesystem = os.environ.get("FILESYSTEM_ROOT")
    return processes.sagemaker_dir(Path(filesystem).parent if filesystem else Path.cwd())

