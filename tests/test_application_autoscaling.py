"""Application Auto Scaling through LocalStack's gateway (harness/lambda_executor/application_autoscaling.py).

Real LocalStack 4.14.0 (its free edition has no Application Auto Scaling of its own), reached with boto3
exactly as a client reaches AWS, but for endpoint_url. What each test asserts comes from AWS's Application
Auto Scaling API Reference (https://docs.aws.amazon.com/autoscaling/application/APIReference/, one page per
operation, named in each test) and botocore's service model (botocore/data/application-autoscaling/
2016-02-06/service-2.json: enums, required members, the errors each operation declares).
"""
from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from scones.deploy import scaling

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
RESOURCE = "endpoint/scones-classifier/variant/AllTraffic"
TARGET = {"ServiceNamespace": NAMESPACE, "ResourceId": RESOURCE, "ScalableDimension": DIMENSION}
TRACKING = {"TargetValue": 70.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}


@pytest.fixture(scope="module")
def autoscaling(localstack):
    return boto3.client("application-autoscaling", endpoint_url=localstack.url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 1}, proxies={}))


@pytest.fixture
def clean(autoscaling):
    """Every test starts and ends with no scalable target in the sagemaker namespace."""
    def clear():
        for target in autoscaling.describe_scalable_targets(ServiceNamespace=NAMESPACE)["ScalableTargets"]:
            autoscaling.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=target["ResourceId"],
                                                   ScalableDimension=target["ScalableDimension"])
    clear()
    yield autoscaling
    clear()


def error_of(call, **request) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as caught:
        call(**request)
    error = caught.value.response
    return error["Error"]["Code"], error["Error"]["Message"], error["ResponseMetadata"]["HTTPStatusCode"]


def test_register_then_describe_a_sagemaker_variant(clean):
    """API_RegisterScalableTarget.html (response ScalableTargetARN) and API_DescribeScalableTargets.html
    (ScalableTarget: namespace, resource, dimension, Min/MaxCapacity, RoleARN: the service-linked role when
    none is given, CreationTime, SuspendedState, ScalableTargetARN)."""
    arn = clean.register_scalable_target(**TARGET, MinCapacity=1, MaxCapacity=4)["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:us-east-1:000000000000:scalable-target/")
    [target] = clean.describe_scalable_targets(ServiceNamespace=NAMESPACE)["ScalableTargets"]
    assert {key: target[key] for key in (*TARGET, "MinCapacity", "MaxCapacity", "ScalableTargetARN")} == {
        **TARGET, "MinCapacity": 1, "MaxCapacity": 4, "ScalableTargetARN": arn}
    assert target["RoleARN"].endswith("role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                                      "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpointVariant")
    assert target["SuspendedState"] == {"DynamicScalingInSuspended": False, "DynamicScalingOutSuspended": False,
                                        "ScheduledScalingSuspended": False}
    assert target["CreationTime"].year >= 2026
    # other namespaces and filters see nothing of it
    assert clean.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"] == []
    assert clean.describe_scalable_targets(ServiceNamespace=NAMESPACE, ResourceIds=["endpoint/x/variant/y"])["ScalableTargets"] == []


def test_registering_again_updates_only_what_it_names(clean):
    """API_RegisterScalableTarget.html: "To update a scalable target, specify the parameters that you want to
    change ... Any parameters that you don't specify are not changed by this update request." The ARN stays."""
    arn = clean.register_scalable_target(**TARGET, MinCapacity=1, MaxCapacity=4)["ScalableTargetARN"]
    assert clean.register_scalable_target(**TARGET, MaxCapacity=6)["ScalableTargetARN"] == arn
    [target] = clean.describe_scalable_targets(ServiceNamespace=NAMESPACE)["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 6)


def test_a_new_target_needs_both_capacities_and_min_at_most_max(clean):
    """API_RegisterScalableTarget.html: MinCapacity and MaxCapacity are "required to register a scalable target";
    an invalid request is a ValidationException (HTTP 400, "Common Errors" page)."""
    code, message, status = error_of(clean.register_scalable_target, **TARGET, MinCapacity=1)
    assert (code, status) == ("ValidationException", 400) and "MaxCapacity" in message
    code, message, _ = error_of(clean.register_scalable_target, **TARGET, MinCapacity=5, MaxCapacity=2)
    assert code == "ValidationException" and "(5)" in message and "(2)" in message
    assert clean.describe_scalable_targets(ServiceNamespace=NAMESPACE)["ScalableTargets"] == []


@pytest.mark.parametrize("request_, named", [
    ({"ServiceNamespace": "sagemakr"}, "serviceNamespace"),
    ({"ScalableDimension": "sagemaker:variant:Instances"}, "scalableDimension"),
])
def test_values_outside_the_models_enums_are_refused(clean, request_, named):
    """botocore's model: ServiceNamespace and ScalableDimension are enums, which botocore does not check on the
    client; the service answers ValidationException ("Member must satisfy enum value set", the wording of AWS's
    request validation)."""
    code, message, _ = error_of(clean.register_scalable_target, **{**TARGET, **request_}, MinCapacity=1, MaxCapacity=2)
    assert code == "ValidationException"
    assert named in message and "Member must satisfy enum value set" in message


@pytest.mark.parametrize("target", [
    {**TARGET, "ScalableDimension": "ecs:service:DesiredCount"},         # dimension of another namespace
    {**TARGET, "ResourceId": "service/default/web"},                     # resource of another type
    {**TARGET, "ResourceId": "endpoint/scones-classifier"},              # not endpoint/<name>/variant/<variant>
    {**TARGET, "ResourceId": "endpoint/bad_name/variant/AllTraffic"},    # not a SageMaker endpoint name
])
def test_dimension_and_resource_must_fit_the_namespace(clean, target):
    """API_RegisterScalableTarget.html: for SageMaker the ResourceId is "endpoint/<endpoint-name>/variant/
    <variant-name>" and the dimension sagemaker:variant:DesiredInstanceCount; a mismatch is a ValidationException
    (AWS: "Unsupported service namespace, resource type or scalable dimension"). SageMaker's EndpointName and
    VariantName patterns are in botocore's sagemaker model."""
    code, message, _ = error_of(clean.register_scalable_target, **target, MinCapacity=1, MaxCapacity=2)
    assert code == "ValidationException"
    assert "Unsupported" in message


def test_a_policy_needs_a_registered_target(clean):
    """API_PutScalingPolicy.html, Errors: ObjectNotFoundException, "the scalable target with the specified service
    namespace, resource ID, and scalable dimension does not exist"; AWS words it "No scalable target registered
    for service namespace: ..., resource ID: ..., scalable dimension: ..."."""
    code, message, status = error_of(clean.put_scaling_policy, PolicyName="p", **TARGET, PolicyType="TargetTrackingScaling",
                                     TargetTrackingScalingPolicyConfiguration=TRACKING)
    assert (code, status) == ("ObjectNotFoundException", 400)
    assert message == (f"No scalable target registered for service namespace: {NAMESPACE}, resource ID: {RESOURCE}, "
                       f"scalable dimension: {DIMENSION}")


def test_put_describe_and_delete_a_target_tracking_policy(clean):
    """API_PutScalingPolicy.html (response PolicyARN, Alarms; an upsert on the policy name keeps its ARN),
    API_DescribeScalingPolicies.html (ScalingPolicy with its configuration), API_DeleteScalingPolicy.html
    (a policy that does not exist: ObjectNotFoundException)."""
    clean.register_scalable_target(**TARGET, MinCapacity=1, MaxCapacity=4)
    created = clean.put_scaling_policy(PolicyName="p", **TARGET, PolicyType="TargetTrackingScaling",
                                       TargetTrackingScalingPolicyConfiguration=TRACKING)
    assert created["PolicyARN"].startswith("arn:aws:autoscaling:us-east-1:000000000000:scalingPolicy:")
    assert created["PolicyARN"].endswith(f":resource/{NAMESPACE}/{RESOURCE}:policyName/p")
    assert created["Alarms"] == []   # stored, not acted on: no CloudWatch alarm is created here
    again = clean.put_scaling_policy(PolicyName="p", **TARGET, PolicyType="TargetTrackingScaling",
                                     TargetTrackingScalingPolicyConfiguration={**TRACKING, "TargetValue": 90.0})
    assert again["PolicyARN"] == created["PolicyARN"]
    [policy] = clean.describe_scaling_policies(ServiceNamespace=NAMESPACE, ResourceId=RESOURCE)["ScalingPolicies"]
    assert policy["PolicyName"] == "p" and policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 90.0
    assert clean.describe_scaling_policies(ServiceNamespace=NAMESPACE, PolicyNames=["other"])["ScalingPolicies"] == []
    clean.delete_scaling_policy(PolicyName="p", **TARGET)
    assert clean.describe_scaling_policies(ServiceNamespace=NAMESPACE)["ScalingPolicies"] == []
    code, message, _ = error_of(clean.delete_scaling_policy, PolicyName="p", **TARGET)
    assert code == "ObjectNotFoundException" and message.endswith("policy name: p")


def test_a_policy_type_needs_its_own_configuration(clean):
    """API_PutScalingPolicy.html: TargetTrackingScalingPolicyConfiguration is "required if you are creating a
    target tracking scaling policy"; PolicyType's enum is StepScaling, TargetTrackingScaling, PredictiveScaling."""
    clean.register_scalable_target(**TARGET, MinCapacity=1, MaxCapacity=4)
    code, message, _ = error_of(clean.put_scaling_policy, PolicyName="p", **TARGET, PolicyType="TargetTrackingScaling")
    assert code == "ValidationException" and "TargetTrackingScalingPolicyConfiguration" in message
    code, _, _ = error_of(clean.put_scaling_policy, PolicyName="p", **TARGET, PolicyType="Tracking",
                          TargetTrackingScalingPolicyConfiguration=TRACKING)
    assert code == "ValidationException"


def test_deregistering_removes_the_target_and_its_policies(clean):
    """API_DeregisterScalableTarget.html: "Deregistering a scalable target deletes the scaling policies and the
    scheduled actions that are associated with it"; a target that is not registered: ObjectNotFoundException."""
    clean.register_scalable_target(**TARGET, MinCapacity=1, MaxCapacity=4)
    clean.put_scaling_policy(PolicyName="p", **TARGET, PolicyType="TargetTrackingScaling",
                             TargetTrackingScalingPolicyConfiguration=TRACKING)
    clean.deregister_scalable_target(**TARGET)
    assert clean.describe_scalable_targets(ServiceNamespace=NAMESPACE)["ScalableTargets"] == []
    assert clean.describe_scaling_policies(ServiceNamespace=NAMESPACE)["ScalingPolicies"] == []
    code, message, _ = error_of(clean.deregister_scalable_target, **TARGET)
    assert code == "ObjectNotFoundException" and message.startswith("No scalable target found for service namespace")


def test_describe_pages_with_max_results_and_next_token(clean):
    """API_DescribeScalableTargets.html: MaxResults (at most 50) and NextToken ("null if there are no more
    results"); boto3's paginator (botocore's paginators-1.json) walks them."""
    for index in range(3):
        clean.register_scalable_target(**{**TARGET, "ResourceId": f"endpoint/e{index}/variant/AllTraffic"},
                                       MinCapacity=1, MaxCapacity=2)
    first = clean.describe_scalable_targets(ServiceNamespace=NAMESPACE, MaxResults=2)
    assert len(first["ScalableTargets"]) == 2 and first["NextToken"]
    rest = clean.describe_scalable_targets(ServiceNamespace=NAMESPACE, MaxResults=2, NextToken=first["NextToken"])
    assert len(rest["ScalableTargets"]) == 1 and "NextToken" not in rest
    pages = clean.get_paginator("describe_scalable_targets").paginate(ServiceNamespace=NAMESPACE,
                                                                      PaginationConfig={"PageSize": 1})
    assert sorted(t["ResourceId"] for page in pages for t in page["ScalableTargets"]) == [
        f"endpoint/e{index}/variant/AllTraffic" for index in range(3)]
    code, _, _ = error_of(clean.describe_scalable_targets, ServiceNamespace=NAMESPACE, NextToken="not-a-token")
    assert code == "InvalidNextTokenException"


def test_scaling_activities_are_empty_because_nothing_scales(clean):
    """API_DescribeScalingActivities.html: ScalingActivities lists what scaling did; here nothing acts on a
    policy, so the list is empty (README: stored, not acted on)."""
    clean.register_scalable_target(**TARGET, MinCapacity=1, MaxCapacity=4)
    assert clean.describe_scaling_activities(ServiceNamespace=NAMESPACE, ResourceId=RESOURCE)["ScalingActivities"] == []


def test_deploy_scalings_own_calls_work_unchanged(clean, localstack):
    """deploy/scaling.py as `scones deploy --target aws` runs it (ensure, describe, remove, remove again),
    against LocalStack with this service; its SageMaker describe_endpoint finds no endpoint here (LocalStack's
    free edition has no SageMaker), which describe_autoscaling already treats as unknown."""
    options = scaling.ScalingOptions(min_instances=1, max_instances=3, target_invocations=50.0)
    resources = scaling.ensure_autoscaling(clean, prefix="scones", endpoint_name="scones-classifier", options=options)
    assert scaling.ensure_autoscaling(clean, prefix="scones", endpoint_name="scones-classifier",
                                      options=options) == resources   # a second deploy changes nothing
    sagemaker = boto3.client("sagemaker", endpoint_url=localstack.url, region_name="us-east-1",
                             aws_access_key_id="test", aws_secret_access_key="test",
                             config=Config(retries={"max_attempts": 1}, proxies={}))
    described = scaling.describe_autoscaling(clean, sagemaker, resources)
    assert described["resource_id"] == RESOURCE
    assert (described["min_instances"], described["max_instances"]) == (1, 3)
    assert described["policies"] == [{"name": "scones-invocations-per-instance", "type": "TargetTrackingScaling",
                                      "target": 50.0}]
    assert scaling.remove_autoscaling(clean, resources) == [
        "scaling policy scones-invocations-per-instance", f"scalable target {RESOURCE}"]
    assert scaling.remove_autoscaling(clean, resources) == []   # already gone is fine
