"""Application Auto Scaling on LocalStack's gateway: scalable targets and scaling policies, stored and validated.

LocalStack 4.14 community has no Application Auto Scaling ("not included in your current license plan
or not yet emulated"), so `scones deploy`'s autoscaling step (deploy/scaling.py) could not run locally.
With this, LocalStack answers these operations of botocore's `application-autoscaling` model (JSON 1.1,
X-Amz-Target AnyScaleFrontendService.<Operation>) as the API reference describes them
(https://docs.aws.amazon.com/autoscaling/application/APIReference/):

- RegisterScalableTarget (an upsert: a new target needs MinCapacity and MaxCapacity, an update changes only
  what it names), DescribeScalableTargets, DeregisterScalableTarget (its policies go with it);
- PutScalingPolicy (an upsert; the target must be registered, else ObjectNotFoundException),
  DescribeScalingPolicies, DeleteScalingPolicy;
- DescribeScalingActivities: always empty, since nothing here ever scales.

Validated as AWS validates: ServiceNamespace, ScalableDimension, PolicyType and PredefinedMetricType against
the model's enums; the dimension's namespace and resource type against ServiceNamespace and ResourceId; a
SageMaker ResourceId as endpoint/<endpoint>/variant/<variant> (or inference-component/<name>) with SageMaker's
name rules; MinCapacity <= MaxCapacity; a policy type's own configuration. Errors are ValidationException,
ObjectNotFoundException and InvalidNextTokenException with AWS's wording where it is known.

Stored, not acted on: nothing watches a metric, no CloudWatch alarm is created (PutScalingPolicy answers
`Alarms: []`), no capacity changes, and a SageMaker endpoint named in a ResourceId is not looked up. The
store lives as long as LocalStack, like every resource of LocalStack's free edition. Other operations
(scheduled actions, tags) answer 501.

How: like the sagemaker-runtime route (sagemaker_runtime.py), an `on_infra_start` hook (registered by
harness/localstack.py) appends a handler to LocalStack's custom service request handlers; it serves the
operations with LocalStack's own Skeleton, which serializes replies and errors from the service model.
"""
from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from localstack.aws.api import CommonServiceException, RequestContext
from localstack.aws.chain import HandlerChain
from localstack.aws.skeleton import ServiceRequestDispatcher, Skeleton
from localstack.aws.spec import load_service
from localstack.http import Response
from localstack.runtime import hooks

SERVICE = "application-autoscaling"
# SageMaker's EndpointName and VariantName (botocore/data/sagemaker/*/service-2.json): letters, digits, inner hyphens.
SAGEMAKER_NAME = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
SAGEMAKER_RESOURCE_IDS = {
    "variant": re.compile(rf"^endpoint/{SAGEMAKER_NAME}/variant/{SAGEMAKER_NAME}$"),
    "inference-component": re.compile(rf"^inference-component/{SAGEMAKER_NAME}$"),
}
SAGEMAKER_RESOURCE_ID_FORMS = {"variant": "endpoint/<endpoint-name>/variant/<variant-name>",
                               "inference-component": "inference-component/<inference-component-name>"}
# The service-linked roles RegisterScalableTarget uses when no RoleARN is given (Application Auto Scaling
# User Guide, "Service-linked roles for Application Auto Scaling").
SERVICE_LINKED_ROLES = {
    "ecs": ("ecs", "ECSService"), "ec2": ("ec2", "EC2SpotFleetRequest"), "appstream": ("appstream", "AppStreamFleet"),
    "dynamodb": ("dynamodb", "DynamoDBTable"), "rds": ("rds", "RDSCluster"),
    "sagemaker": ("sagemaker", "SageMakerEndpointVariant"), "custom-resource": ("custom-resource", "CustomResource"),
    "comprehend": ("comprehend", "ComprehendEndpoint"), "lambda": ("lambda", "LambdaConcurrency"),
    "cassandra": ("cassandra", "CassandraTable"), "kafka": ("kafka", "KafkaCluster"),
    "elasticache": ("elasticache", "ElastiCacheRG"), "neptune": ("neptune", "NeptuneCluster"),
    "workspaces": ("workspaces", "WorkSpacesPool"), "elasticmapreduce": ("elasticmapreduce", "EMRInstanceGroup"),
}
MAX_RESULTS = 50   # DescribeScalableTargets / DescribeScalingPolicies: "The maximum value is 50."


class ValidationException(CommonServiceException):
    def __init__(self, message: str):
        super().__init__("ValidationException", message, status_code=400, sender_fault=True)


class ObjectNotFoundException(CommonServiceException):
    def __init__(self, message: str):
        super().__init__("ObjectNotFoundException", message, status_code=400, sender_fault=True)


class InvalidNextTokenException(CommonServiceException):
    def __init__(self, message: str):
        super().__init__("InvalidNextTokenException", message, status_code=400, sender_fault=True)


def _enum_check(model, shape: str, value: Any, member: str) -> str:
    """The value, if it is in the model's enum; else AWS's request validation message."""
    allowed = model.shape_for(shape).enum
    if value not in allowed:
        raise ValidationException(f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
                                  f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]")
    return value


def _length_check(value: str, member: str, most: int) -> None:
    if not 1 <= len(value) <= most:
        raise ValidationException(f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
                                  f"constraint: Member must have length between 1 and {most}")


def _resource_type(resource_id: str) -> str:
    """The resource type a ResourceId names: its first part, or the third for a SageMaker variant
    (endpoint/E/variant/V), a DynamoDB index (table/T/index/I) and a Keyspaces table (keyspace/K/table/T)."""
    if resource_id.startswith("arn:") and ":comprehend:" in resource_id:
        resource_id = resource_id.rsplit(":", 1)[-1]
    parts = resource_id.split("/") if "/" in resource_id else resource_id.split(":")
    if parts[0] in ("endpoint", "keyspace") or (parts[0] == "table" and len(parts) > 2):
        return parts[2] if len(parts) > 2 else ""
    return parts[0]


@dataclass(frozen=True)
class TargetKey:
    namespace: str
    resource_id: str
    dimension: str

    def describe(self) -> str:
        return (f"service namespace: {self.namespace}, resource ID: {self.resource_id}, "
                f"scalable dimension: {self.dimension}")


@dataclass
class Store:
    """One account's and region's scalable targets and policies."""
    targets: dict[TargetKey, dict] = field(default_factory=dict)
    policies: dict[tuple[TargetKey, str], dict] = field(default_factory=dict)


class ApplicationAutoScaling:
    """The operations, each taking LocalStack's request context and the parsed request."""

    def __init__(self) -> None:
        self.model = load_service(SERVICE)
        self._stores: dict[tuple[str, str], Store] = {}
        self._lock = threading.Lock()

    def _store(self, context: RequestContext) -> Store:
        return self._stores.setdefault((context.account_id, context.region), Store())

    # --- validation ---------------------------------------------------------------------------------

    def _namespace(self, request: dict) -> str:
        return _enum_check(self.model, "ServiceNamespace", request.get("ServiceNamespace"), "serviceNamespace")

    def _target_key(self, request: dict) -> TargetKey:
        """ServiceNamespace, ResourceId and ScalableDimension, checked each and against each other."""
        namespace = self._namespace(request)
        resource_id: str = request.get("ResourceId") or ""
        _length_check(resource_id, "resourceId", 1600)
        dimension = _enum_check(self.model, "ScalableDimension", request.get("ScalableDimension"), "scalableDimension")
        dimension_namespace, dimension_type, _ = dimension.split(":")
        if dimension_namespace != namespace or (
                dimension_type != "ResourceType" and _resource_type(resource_id) != dimension_type):
            raise ValidationException("Unsupported service namespace, resource type or scalable dimension")
        if namespace == "sagemaker" and not SAGEMAKER_RESOURCE_IDS[dimension_type].match(resource_id):
            raise ValidationException(
                f"Unsupported resource ID {resource_id!r} for scalable dimension {dimension}: a SageMaker "
                f"{dimension_type} is {SAGEMAKER_RESOURCE_ID_FORMS[dimension_type]}, each name of letters, "
                f"digits and inner hyphens, at most 63 characters")
        return TargetKey(namespace, resource_id, dimension)

    def _page(self, items: list[dict], request: dict, what: str) -> dict:
        most = request.get("MaxResults") or MAX_RESULTS
        if not 1 <= most <= MAX_RESULTS:
            raise ValidationException(f"1 validation error detected: Value '{most}' at 'maxResults' failed to satisfy "
                                      f"constraint: Member must have value less than or equal to {MAX_RESULTS}")
        token = request.get("NextToken")
        start = 0
        if token:
            if not token.isdigit() or int(token) > len(items):
                raise InvalidNextTokenException("Invalid token")
            start = int(token)
        page: dict[str, Any] = {what: items[start:start + most]}
        if start + most < len(items):
            page["NextToken"] = str(start + most)
        return page

    # --- scalable targets ---------------------------------------------------------------------------

    def register_scalable_target(self, context: RequestContext, request: dict) -> dict:
        key = self._target_key(request)
        with self._lock:
            store = self._store(context)
            existing = store.targets.get(key)
            low = request.get("MinCapacity", existing["MinCapacity"] if existing else None)
            high = request.get("MaxCapacity", existing["MaxCapacity"] if existing else None)
            if low is None or high is None:
                raise ValidationException("MinCapacity and MaxCapacity are required when registering a new "
                                          f"scalable target ({key.describe()})")
            if low < 0:
                raise ValidationException(f"MinCapacity must be 0 or more, not {low}")
            if low > high:
                raise ValidationException(f"Minimum capacity ({low}) cannot be greater than maximum capacity ({high})")
            if existing is None:
                existing = store.targets[key] = {
                    "ServiceNamespace": key.namespace, "ResourceId": key.resource_id, "ScalableDimension": key.dimension,
                    "RoleARN": request.get("RoleARN") or _service_linked_role(context.account_id, key.namespace),
                    "CreationTime": datetime.now(timezone.utc),
                    "SuspendedState": {"DynamicScalingInSuspended": False, "DynamicScalingOutSuspended": False,
                                       "ScheduledScalingSuspended": False},
                    "ScalableTargetARN": (f"arn:aws:application-autoscaling:{context.region}:{context.account_id}:"
                                          f"scalable-target/{uuid.uuid4().hex}"),
                }
            existing.update(MinCapacity=low, MaxCapacity=high)
            existing["SuspendedState"].update(request.get("SuspendedState") or {})
            return {"ScalableTargetARN": existing["ScalableTargetARN"]}

    def describe_scalable_targets(self, context: RequestContext, request: dict) -> dict:
        namespace = self._namespace(request)
        resource_ids, dimension = request.get("ResourceIds"), request.get("ScalableDimension")
        if dimension is not None:
            _enum_check(self.model, "ScalableDimension", dimension, "scalableDimension")
        with self._lock:
            targets = [dict(target) for key, target in self._store(context).targets.items()
                       if key.namespace == namespace and (not resource_ids or key.resource_id in resource_ids)
                       and (dimension is None or key.dimension == dimension)]
        return self._page(targets, request, "ScalableTargets")

    def deregister_scalable_target(self, context: RequestContext, request: dict) -> dict:
        key = self._target_key(request)
        with self._lock:
            store = self._store(context)
            if store.targets.pop(key, None) is None:
                raise ObjectNotFoundException(f"No scalable target found for {key.describe()}")
            # "Deregistering a scalable target deletes the scaling policies that are associated with it."
            for policy_key in [policy_key for policy_key in store.policies if policy_key[0] == key]:
                del store.policies[policy_key]
        return {}

    # --- scaling policies ---------------------------------------------------------------------------

    def put_scaling_policy(self, context: RequestContext, request: dict) -> dict:
        key = self._target_key(request)
        name = request.get("PolicyName") or ""
        _length_check(name, "policyName", 256)
        policy_type = request.get("PolicyType") or "StepScaling"   # the API's default
        _enum_check(self.model, "PolicyType", policy_type, "policyType")
        configuration = f"{policy_type}PolicyConfiguration"
        given = [member for member in ("StepScalingPolicyConfiguration", "TargetTrackingScalingPolicyConfiguration",
                                       "PredictiveScalingPolicyConfiguration") if request.get(member)]
        if given != [configuration]:
            raise ValidationException(f"A {policy_type} policy needs {configuration} and no other policy "
                                      f"configuration (given: {', '.join(given) or 'none'})")
        metric = (request[configuration].get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        if policy_type == "TargetTrackingScaling":
            specifications = [member for member in ("PredefinedMetricSpecification", "CustomizedMetricSpecification")
                              if request[configuration].get(member)]
            if len(specifications) != 1:
                raise ValidationException("A TargetTrackingScaling policy needs exactly one of "
                                          "PredefinedMetricSpecification and CustomizedMetricSpecification")
            if metric is not None:
                _enum_check(self.model, "MetricType", metric, "predefinedMetricType")
        with self._lock:
            store = self._store(context)
            if key not in store.targets:
                raise ObjectNotFoundException(f"No scalable target registered for {key.describe()}")
            policy = store.policies.get((key, name))
            if policy is None:
                policy = store.policies[(key, name)] = {
                    "PolicyARN": (f"arn:aws:autoscaling:{context.region}:{context.account_id}:scalingPolicy:"
                                  f"{uuid.uuid4()}:resource/{key.namespace}/{key.resource_id}:policyName/{name}"),
                    "PolicyName": name, "ServiceNamespace": key.namespace, "ResourceId": key.resource_id,
                    "ScalableDimension": key.dimension, "CreationTime": datetime.now(timezone.utc), "Alarms": [],
                }
            for member in given + ["StepScalingPolicyConfiguration", "TargetTrackingScalingPolicyConfiguration",
                                   "PredictiveScalingPolicyConfiguration"]:
                policy.pop(member, None)
            policy.update({"PolicyType": policy_type, configuration: request[configuration]})
            return {"PolicyARN": policy["PolicyARN"], "Alarms": []}

    def describe_scaling_policies(self, context: RequestContext, request: dict) -> dict:
        namespace = self._namespace(request)
        names, resource_id, dimension = (request.get("PolicyNames"), request.get("ResourceId"),
                                         request.get("ScalableDimension"))
        if dimension is not None:
            _enum_check(self.model, "ScalableDimension", dimension, "scalableDimension")
        with self._lock:
            policies = [dict(policy) for (key, name), policy in self._store(context).policies.items()
                        if key.namespace == namespace and (not names or name in names)
                        and (resource_id is None or key.resource_id == resource_id)
                        and (dimension is None or key.dimension == dimension)]
        return self._page(policies, request, "ScalingPolicies")

    def delete_scaling_policy(self, context: RequestContext, request: dict) -> dict:
        key = self._target_key(request)
        name = request.get("PolicyName") or ""
        with self._lock:
            if self._store(context).policies.pop((key, name), None) is None:
                raise ObjectNotFoundException(f"No scaling policy found for {key.describe()}, policy name: {name}")
        return {}

    def describe_scaling_activities(self, context: RequestContext, request: dict) -> dict:
        self._namespace(request)
        return {"ScalingActivities": []}   # nothing here ever scales

    def dispatch_table(self) -> dict[str, ServiceRequestDispatcher]:
        operations = {"RegisterScalableTarget": self.register_scalable_target,
                      "DescribeScalableTargets": self.describe_scalable_targets,
                      "DeregisterScalableTarget": self.deregister_scalable_target,
                      "PutScalingPolicy": self.put_scaling_policy,
                      "DescribeScalingPolicies": self.describe_scaling_policies,
                      "DeleteScalingPolicy": self.delete_scaling_policy,
                      "DescribeScalingActivities": self.describe_scaling_activities}
        return {name: ServiceRequestDispatcher(function, name, expand_parameters=False)
                for name, function in operations.items()}


def _service_linked_role(account: str, namespace: str) -> str:
    service, suffix = SERVICE_LINKED_ROLES[namespace]
    return (f"arn:aws:iam::{account}:role/aws-service-role/{service}.application-autoscaling.amazonaws.com/"
            f"AWSServiceRoleForApplicationAutoScaling_{suffix}")


class ApplicationAutoScalingHandler:
    """A request handler: application-autoscaling requests are answered here, never reach LocalStack's own."""

    def __init__(self, service: ApplicationAutoScaling) -> None:
        self.skeleton = Skeleton(service.model, service.dispatch_table())

    def __call__(self, chain: HandlerChain, context: RequestContext, response: Response) -> None:
        if context.service is None or context.service.service_name != SERVICE:
            return
        response.update_from(self.skeleton.invoke(context))
        chain.stop()


@hooks.on_infra_start()
def install_application_autoscaling() -> None:
    """Add the Application Auto Scaling handler to LocalStack's gateway (once, at LocalStack's start)."""
    from localstack.aws.handlers import serve_custom_service_request_handlers

    serve_custom_service_request_handlers.append(ApplicationAutoScalingHandler(ApplicationAutoScaling()))

