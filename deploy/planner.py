"""A target's configuration in, the ordered list of resources a deploy makes out (deploy/resources.py).

One planner for every target: `scones deploy --target aws`, `scones deploy --target local`, `scones up` and the
compose `deploy` service differ only in the Target they hand it (endpoints, account, which resources, a given or
a trained model). `--dry-run` prints this list; deploy/executor.py runs the very same list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from scones import contract
from scones.deploy import event_runs as runs
from scones.deploy import iam as iam_roles
from scones.deploy import monitoring, scaling
from scones.deploy import resources as r
from scones.deploy import sagemaker as sm
from scones.deploy.packaging import FUNCTIONS
from scones.deploy.workflow import function_name, state_machine_name
from scones.lambdas import drift_monitor

DEFAULT_PREFIX = "scones"   # what every resource name starts with unless a deploy is given another prefix
STEPS = ("bucket", "roles", "model", "endpoint", "workflow")
WORKFLOW_FUNCTIONS = tuple(spec.name for spec in FUNCTIONS)   # serializeImageData, classifyImage, filterInferences
CLASSIFIER = "classifyImage"
ROLE_PURPOSES = ("sagemaker", "lambda", "states", "events", "results", "monitor")
SAGEMAKER_API = "api"        # model, endpoint config, endpoint through boto3 `sagemaker` (AWS, a local control plane)
SAGEMAKER_ROUTE = "route"    # the endpoint server `scones up` starts, registered with LocalStack's runtime route


@dataclass(frozen=True)
class Target:
    """Everything a plan depends on. Defaults are AWS's; deploy/local.py says what the local stack changes."""
    name: str                                  # "aws" or "local"
    region: str
    account_id: str
    prefix: str
    bucket: str
    endpoint_name: str
    threshold: float
    data_dir: Path
    dataset_parts: tuple[str, ...] = ("train", "test")
    upload_data: bool = True
    # SageMaker
    sagemaker: str = SAGEMAKER_API
    model_data: str | None = None              # s3://.../model.tar.gz to serve: no training job
    model_file: Path | None = None             # a model.tar.gz on this machine: uploaded, then served (no training)
    trainer: str = "pytorch"
    hyperparameters: Mapping[str, object] = field(default_factory=dict)
    training_image: str = ""
    inference_image: str = ""
    training_instance: str = sm.TRAINING_INSTANCE
    endpoint_instance: str = sm.ENDPOINT_INSTANCE
    training_timeout_s: float = sm.TRAINING_TIMEOUT_S
    endpoint_timeout_s: float = sm.ENDPOINT_TIMEOUT_S
    endpoint_route: tuple[str, Callable[[str, str], None]] | None = None   # SAGEMAKER_ROUTE: (server URL, register)
    autoscaling: scaling.ScalingOptions | None = field(default_factory=scaling.ScalingOptions)
    classifier_concurrency: int | None = None  # classifyImage's reserved concurrency; None: not set
    # the drift monitor
    monitor_schedule: str = monitoring.DEFAULT_SCHEDULE
    drift_alpha: float = monitoring.DEFAULT_ALPHA
    share_below_limit: float = monitoring.DEFAULT_SHARE_BELOW_LIMIT
    alarm_period_s: int = monitoring.DEFAULT_ALARM_PERIOD_S
    baseline: Path | None = None               # None: from the training job's output (if any)
    restore_capture: Callable[[Any], Any] | None = None   # local: put back what S3 lost from the endpoint's spool

    @property
    def partition(self) -> str:
        return iam_roles.partition_for(self.region)

    @property
    def capture_s3_uri(self) -> str:
        return f"s3://{self.bucket}/{contract.CAPTURE_PREFIX}"

    @property
    def monitor(self) -> monitoring.MonitorSettings:
        return monitoring.MonitorSettings(prefix=self.prefix, bucket=self.bucket, endpoint_name=self.endpoint_name,
                                          threshold=self.threshold, alpha=self.drift_alpha,
                                          schedule=self.monitor_schedule, share_below_limit=self.share_below_limit,
                                          alarm_period_s=self.alarm_period_s)

    def arn(self, service: str, resource: str) -> str:
        region = "" if service in ("iam", "s3") else self.region
        account = "" if service == "s3" else self.account_id
        return f"arn:{self.partition}:{service}:{region}:{account}:{resource}"

    def scope(self) -> iam_roles.Scope:
        images = {image for image in (self.training_image, self.inference_image) if image}
        return iam_roles.Scope(
            partition=self.partition, region=self.region, account_id=self.account_id, prefix=self.prefix,
            bucket=self.bucket, endpoint_name=self.endpoint_name,
            function_names=tuple(function_name(self.prefix, short) for short in WORKFLOW_FUNCTIONS),
            image_repositories=tuple(sorted(sm.image_repository(image) for image in images)))


def _role_names(prefix: str) -> dict[str, str]:
    names = iam_roles.role_names(prefix)
    events = runs.EventRunsNames(prefix)
    return {**names, "events": events.events_role, "results": events.writer_role,
            "monitor": monitoring.MonitorNames(prefix).role}


def plan(target: Target) -> list[r.Resource]:
    """The resources of a deploy to this target, in the order they are made (destroy goes the other way)."""
    prefix, bucket, endpoint = target.prefix, target.bucket, target.endpoint_name
    machine = state_machine_name(prefix)
    machine_arn = target.arn("states", f"stateMachine:{machine}")
    event_names, monitor = runs.EventRunsNames(prefix), target.monitor
    names = _role_names(prefix)
    made: list[r.Resource] = [r.Bucket(id="bucket", step="bucket", bucket=bucket, region=target.region,
                                       account_id=target.account_id)]
    if target.upload_data:
        made.append(r.Dataset(id="dataset", after=("bucket",), bucket=bucket, data_dir=target.data_dir,
                              parts=target.dataset_parts))
    if target.restore_capture is not None:
        made.append(r.CaptureRestore(id="capture-restore", after=("bucket",), bucket=bucket,
                                     restore=target.restore_capture))

    # roles: the same least-privilege roles on every target (LocalStack's IAM holds them; the gateway checks them)
    scope = target.scope()
    policies = {
        "sagemaker": iam_roles.sagemaker_policy(scope), "lambda": iam_roles.lambda_policy(scope),
        "states": iam_roles.states_policy(scope), "events": iam_roles.events_role_policy(scope, machine_arn),
        "results": iam_roles.results_writer_policy(scope, state_machine_name=machine,
                                                   function=event_names.writer_function,
                                                   results_prefix=runs.RESULTS_PREFIX),
        "monitor": iam_roles.monitor_policy(scope, function=monitor.names.function,
                                            capture_prefix=monitor.capture_prefix,
                                            monitor_prefix=monitor.monitor_prefix,
                                            namespace=drift_monitor.DEFAULT_NAMESPACE),
    }
    services = {**iam_roles.TRUSTED_SERVICE, "events": "events.amazonaws.com",
                "results": "lambda.amazonaws.com", "monitor": "lambda.amazonaws.com"}
    role: dict[str, str | r.Ref] = {}
    for purpose in ROLE_PURPOSES:
        made.append(r.Role(id=f"role/{purpose}", role=names[purpose], purpose=purpose, service=services[purpose],
                           policy=policies[purpose], prefix=prefix))
        role[purpose] = r.Ref(f"role/{purpose}", "arn")

    def needs(*ids: str) -> tuple[str, ...]:
        """Ids among these that the plan holds (a given model has no training job to wait for)."""
        planned = {resource.id for resource in made}
        return tuple(i for i in ids if i in planned)

    # the model and the endpoint
    model_data: str | r.Ref | None = target.model_data
    if target.sagemaker == SAGEMAKER_ROUTE:
        if target.endpoint_route is None:
            raise ValueError("a plan that routes to an endpoint server needs its URL and registration")
        url, register = target.endpoint_route
        made.append(r.EndpointRoute(id="endpoint-route", step="endpoint", endpoint=endpoint, url=url,
                                    register=register))
    else:
        if model_data is None and target.model_file is not None:
            key = f"models/{prefix}/model.tar.gz"
            made.append(r.ObjectUpload(id="model-artifact", step="model", after=("bucket",), bucket=bucket, key=key,
                                       path=target.model_file, what="model artifact"))
            model_data = r.Ref("model-artifact", "uri")
        elif model_data is None:
            made.append(r.TrainingJob(
                id="training-job", after=needs("bucket", "dataset", "role/sagemaker"), prefix=prefix,
                trainer=target.trainer, bucket=bucket, region=target.region, role_arn=role["sagemaker"],
                image=target.training_image, instance_type=target.training_instance,
                hyperparameters=target.hyperparameters, data_dir=target.data_dir,
                timeout_s=target.training_timeout_s))
            model_data = r.Ref("training-job", "model_data")
        made += [
            r.Model(id="model", after=needs("role/sagemaker", "training-job", "model-artifact"), prefix=prefix,
                    image=target.inference_image, model_data=model_data, role_arn=role["sagemaker"],
                    trainer=target.trainer),
            r.EndpointConfig(id="endpoint-config", after=("model",), prefix=prefix, model_name=r.Ref("model", "name"),
                             capture_s3_uri=target.capture_s3_uri, instance_type=target.endpoint_instance),
            r.Endpoint(id="endpoint", after=("endpoint-config",), endpoint=endpoint,
                       config_name=r.Ref("endpoint-config", "name"), timeout_s=target.endpoint_timeout_s),
            r.LogGroup(id="log-group/endpoint", step="endpoint", group=f"/aws/sagemaker/Endpoints/{endpoint}"),
        ]
        if target.autoscaling is not None:
            made.append(r.Autoscaling(id="autoscaling", after=("endpoint",), prefix=prefix, endpoint=endpoint,
                                      options=target.autoscaling))

    # the workflow: three functions and the state machine chaining them
    for spec in FUNCTIONS:
        made.append(r.Function(id=f"function/{spec.name}", after=needs("role/lambda"),
                               function=function_name(prefix, spec.name), spec=spec, role_arn=role["lambda"],
                               environment=spec.environment_values(endpoint_name=endpoint, threshold=target.threshold)))
    made.append(r.StateMachine(
        id="state-machine", after=needs("role/states"), machine=machine, role_arn=role["states"],
        function_arns={spec.name: r.Ref(f"function/{spec.name}", "arn") for spec in FUNCTIONS}))
    if target.classifier_concurrency is not None:
        made.append(r.Concurrency(id=f"concurrency/{CLASSIFIER}", after=(f"function/{CLASSIFIER}",),
                                  function=function_name(prefix, CLASSIFIER), concurrency=target.classifier_concurrency))

    # event-driven runs: photos under incoming/ start the workflow, results/ receive each run's result
    writer = runs.RESULT_WRITER
    made += [
        r.Function(id="function/writeResult", after=needs("role/results"), function=event_names.writer_function,
                   spec=writer, role_arn=role["results"], environment=runs.writer_environment(bucket)),
        r.Rule(id="rule/run-finished", after=("state-machine",), rule=event_names.finished_rule,
               description="Scones: write each finished run's result to results/",
               pattern=runs.run_finished_pattern(machine_arn),
               target={"Id": runs.WRITER_TARGET_ID, "Arn": r.Ref("function/writeResult", "arn")},
               invoke_statement=event_names.writer_permission),
        r.Rule(id="rule/photo-landed", after=needs("state-machine", "role/events", "bucket"),
               rule=event_names.photo_rule,
               description=f"Scones: a photo landing under s3://{bucket}/{runs.INTAKE_PREFIX} starts the workflow",
               pattern=runs.photo_landed_pattern(bucket),
               target={"Id": runs.WORKFLOW_TARGET_ID, "Arn": r.Ref("state-machine", "arn"), "RoleArn": role["events"],
                       "InputTransformer": runs.WORKFLOW_INPUT}),
        r.BucketEvents(id="bucket-events", after=("bucket", "rule/photo-landed"), bucket=bucket),
    ]

    # the scheduled drift monitor, its topic and alarms
    topic_arn = target.arn("sns", monitor.names.topic)
    made += [
        r.Baseline(id="baseline", after=needs("bucket", "training-job", "model-artifact"), bucket=bucket,
                   key=monitor.monitor_prefix + drift_monitor.BASELINE_FILE, source_file=target.baseline,
                   model_data=None if target.baseline else model_data),
        r.Function(id="function/monitorDrift", after=needs("role/monitor"), function=monitor.names.function,
                   spec=monitoring.MONITOR_FUNCTION, role_arn=role["monitor"], environment=monitor.environment()),
        r.Topic(id="topic/monitor-alarms", topic=monitor.names.topic),
        r.Rule(id="rule/monitor-schedule", after=("function/monitorDrift",), rule=monitor.names.rule,
               description=f"Scones: run {monitor.names.function} on {monitor.schedule}", schedule=monitor.schedule,
               target={"Id": monitoring.SCHEDULE_TARGET_ID, "Arn": r.Ref("function/monitorDrift", "arn")},
               invoke_statement=monitoring.SCHEDULE_STATEMENT_ID),
        *[r.Alarm(id=f"alarm/{alarm['AlarmName'][len(prefix) + 1:]}", after=("topic/monitor-alarms",), alarm=alarm)
          for alarm in monitor.alarms(topic_arn)],
    ]
    made += [r.LogGroup(id=f"log-group/{short}", group=f"/aws/lambda/{function_name(prefix, short)}")
             for short in (*WORKFLOW_FUNCTIONS, writer.name, monitoring.MONITOR_FUNCTION.name)]
    return made


def describe(plan: list[r.Resource]) -> list[str]:
    """The plan as numbered lines, one per resource, grouped by step: what `--dry-run` prints."""
    lines = []
    for number, resource in enumerate(plan, start=1):
        after = f" (after {', '.join(resource.after)})" if resource.after else ""
        lines.append(f"{number:2}. [{resource.step}] {resource.id}: {resource.describe()}{after}")
    return lines


def steps_of(plan: list[r.Resource]) -> tuple[str, ...]:
    present = {resource.step for resource in plan}
    return tuple(step for step in STEPS if step in present)


def outputs_of(target: Target, made: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The record's outputs (a StackOutputs, deploy/record.py) from what the plan made."""
    return {
        "region": target.region,
        "bucket": target.bucket,
        "state_machine_arn": made["state-machine"]["arn"],
        "function_arns": {short: made[f"function/{short}"]["arn"] for short in WORKFLOW_FUNCTIONS},
        "endpoint_name": target.endpoint_name,
        "capture_s3_uri": target.capture_s3_uri.rstrip("/"),
        "intake_s3_uri": f"s3://{target.bucket}/{runs.INTAKE_PREFIX}",
        "results_s3_uri": f"s3://{target.bucket}/{runs.RESULTS_PREFIX}",
        "monitor_topic_arn": made["topic/monitor-alarms"]["arn"],
    }
