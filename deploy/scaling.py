"""An endpoint that scales (AWS only: LocalStack's free edition has no Application Auto Scaling).

- Target tracking on the production variant: Application Auto Scaling keeps SageMaker's
  SageMakerVariantInvocationsPerInstance (invocations per instance per minute) near the target value,
  between min and max instances (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling.html).
  RegisterScalableTarget creates the service-linked role AWSServiceRoleForApplicationAutoScaling_SageMakerEndpointVariant
  on first use; the deploy creates no role for it.
- Reserved concurrency on classifyImage: at most that many InvokeEndpoint calls at once, so a burst of
  workflow runs queues in Step Functions' retries (Lambda.TooManyRequestsException) instead of piling onto
  instances that are still starting; it also reserves that share of the account's concurrency for it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from botocore.exceptions import ClientError

from scones.deploy.sagemaker import VARIANT_NAME
from scones.deploy.waiting import DeployError, Progress

SERVICE_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
DEFAULT_MIN_INSTANCES = 1
DEFAULT_MAX_INSTANCES = 4
# Invocations per instance per minute. An ml.m5.large answers one 32x32 image in tens of milliseconds;
# 100 a minute per instance leaves room for bursts while a new instance starts (several minutes).
DEFAULT_TARGET_INVOCATIONS = 100.0
SCALE_OUT_COOLDOWN_S = 60
SCALE_IN_COOLDOWN_S = 300
# classifyImage's reserved concurrency per endpoint instance at the most: calls beyond wait in the workflow's retries.
CONCURRENCY_PER_INSTANCE = 5


@dataclass(frozen=True)
class ScalingOptions:
    min_instances: int = DEFAULT_MIN_INSTANCES
    max_instances: int = DEFAULT_MAX_INSTANCES
    target_invocations: float = DEFAULT_TARGET_INVOCATIONS
    classifier_concurrency: int | None = None   # None: CONCURRENCY_PER_INSTANCE x max_instances; 0: none

    def check(self) -> None:
        if not 1 <= self.min_instances <= self.max_instances:
            raise DeployError(f"autoscaling needs 1 <= --min-instances ({self.min_instances}) <= --max-instances "
                              f"({self.max_instances})")
        if self.target_invocations <= 0:
            raise DeployError(f"--target-invocations must be above 0, not {self.target_invocations}")
        if self.classifier_concurrency is not None and self.classifier_concurrency < 0:
            raise DeployError(f"--classifier-concurrency must be 0 (none) or more, not {self.classifier_concurrency}")

    def resolved_concurrency(self) -> int:
        if self.classifier_concurrency is None:
            return CONCURRENCY_PER_INSTANCE * self.max_instances
        return self.classifier_concurrency


@dataclass
class ScalingResources:
    resource_id: str
    policy_name: str
    min_instances: int
    max_instances: int
    target_invocations: float
    classifier_function: str | None = None
    classifier_concurrency: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "ScalingResources | None":
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__}) if data else None


def resource_id(endpoint_name: str, variant: str = VARIANT_NAME) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(prefix: str) -> str:
    return f"{prefix}-invocations-per-instance"


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def ensure_autoscaling(autoscaling, *, prefix: str, endpoint_name: str, options: ScalingOptions,
                       progress: Progress | None = None) -> ScalingResources:
    """RegisterScalableTarget and PutScalingPolicy are upserts: a second deploy changes nothing."""
    options.check()
    target = resource_id(endpoint_name)
    autoscaling.register_scalable_target(ServiceNamespace=SERVICE_NAMESPACE, ResourceId=target,
                                         ScalableDimension=SCALABLE_DIMENSION,
                                         MinCapacity=options.min_instances, MaxCapacity=options.max_instances)
    autoscaling.put_scaling_policy(
        PolicyName=policy_name(prefix), ServiceNamespace=SERVICE_NAMESPACE, ResourceId=target,
        ScalableDimension=SCALABLE_DIMENSION, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(options.target_invocations),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
            "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
        },
    )
    if progress:
        progress(f"autoscaling {target}: {options.min_instances}-{options.max_instances} instances, "
                 f"target {options.target_invocations:g} {METRIC}")
    return ScalingResources(target, policy_name(prefix), options.min_instances, options.max_instances,
                            float(options.target_invocations))


def reserve_classifier_concurrency(lambda_client, function: str, concurrency: int, progress: Progress | None = None) -> int:
    """PutFunctionConcurrency, or DeleteFunctionConcurrency for 0. Returns what is reserved."""
    if concurrency == 0:
        lambda_client.delete_function_concurrency(FunctionName=function)
        return 0
    try:
        lambda_client.put_function_concurrency(FunctionName=function, ReservedConcurrentExecutions=concurrency)
    except ClientError as error:
        if _code(error) in ("InvalidParameterValueException", "LimitExceededException"):
            # Lambda keeps at least 100 of the account's concurrency unreserved; new accounts may have less in all.
            raise DeployError(f"Lambda refused reserved concurrency {concurrency} for {function}: "
                              f"{error.response['Error'].get('Message')}; pass a smaller --classifier-concurrency, "
                              f"or 0 for none") from error
        raise
    if progress:
        progress(f"reserved concurrency of Lambda function {function}: {concurrency}")
    return concurrency


def remove_autoscaling(autoscaling, resources: ScalingResources, progress: Progress | None = None) -> list[str]:
    """The policy, then the scalable target; already gone is fine. The endpoint's own deletion follows."""
    deleted = []
    for what, call in (
        (f"scaling policy {resources.policy_name}",
         lambda: autoscaling.delete_scaling_policy(PolicyName=resources.policy_name, ServiceNamespace=SERVICE_NAMESPACE,
                                                   ResourceId=resources.resource_id, ScalableDimension=SCALABLE_DIMENSION)),
        (f"scalable target {resources.resource_id}",
         lambda: autoscaling.deregister_scalable_target(ServiceNamespace=SERVICE_NAMESPACE, ResourceId=resources.resource_id,
                                                        ScalableDimension=SCALABLE_DIMENSION)),
    ):
        try:
            call()
        except ClientError as error:
            if _code(error) != "ObjectNotFoundException":
                raise
            continue
        deleted.append(what)
        if progress:
            progress(f"deleted {what}")
    return deleted


def describe_autoscaling(autoscaling, sagemaker, resources: ScalingResources) -> dict[str, Any]:
    """What Application Auto Scaling holds now, and the variant's current instance count."""
    targets = autoscaling.describe_scalable_targets(ServiceNamespace=SERVICE_NAMESPACE, ResourceIds=[resources.resource_id],
                                                    ScalableDimension=SCALABLE_DIMENSION)["ScalableTargets"]
    policies = autoscaling.describe_scaling_policies(ServiceNamespace=SERVICE_NAMESPACE, ResourceId=resources.resource_id,
                                                     ScalableDimension=SCALABLE_DIMENSION)["ScalingPolicies"]
    endpoint_name = resources.resource_id.split("/")[1]
    try:
        variants = sagemaker.describe_endpoint(EndpointName=endpoint_name).get("ProductionVariants") or []
    except ClientError:
        variants = []
    return {
        "resource_id": resources.resource_id,
        "min_instances": targets[0]["MinCapacity"] if targets else None,
        "max_instances": targets[0]["MaxCapacity"] if targets else None,
        "current_instances": variants[0].get("CurrentInstanceCount") if variants else None,
        "policies": [{"name": p["PolicyName"], "type": p["PolicyType"],
                      "target": (p.get("TargetTrackingScalingPolicyConfiguration") or {}).get("TargetValue")}
                     for p in policies],
        "classifier_concurrency": resources.classifier_concurrency,
    }
