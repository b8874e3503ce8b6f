"""The three IAM roles of an AWS deploy, each with one inline policy scoped to this deploy's resources.

- SageMaker execution role: this bucket's objects, pulling the framework images, its own logs.
- Lambda role: read this bucket's objects (and know a missing one is missing), invoke this one endpoint, write
  these functions' logs.
- Step Functions role: invoke these three functions (their ARNs are known before they exist).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from botocore.exceptions import ClientError

from scones.deploy.waiting import DeployError, Progress

POLICY_NAME = "scones-least-privilege"
VERSION = "2012-10-17"


@dataclass(frozen=True)
class Scope:
    """Everything the policies name: the deploy's own resources, nothing wider."""

    partition: str
    region: str
    account_id: str
    prefix: str
    bucket: str
    endpoint_name: str
    function_names: tuple[str, ...]
    image_repositories: tuple[str, ...]   # "<registry account>:<repository>" the SageMaker role may pull

    def function_arn(self, name: str) -> str:
        return f"arn:{self.partition}:lambda:{self.region}:{self.account_id}:function:{name}"

    def endpoint_arn(self) -> str:
        # SageMaker lower-cases endpoint names in ARNs.
        return f"arn:{self.partition}:sagemaker:{self.region}:{self.account_id}:endpoint/{self.endpoint_name.lower()}"

    def log_group_arns(self, group: str) -> list[str]:
        # CreateLogGroup is authorised on the group's ARN, streams and events on "<group ARN>:*".
        base = f"arn:{self.partition}:logs:{self.region}:{self.account_id}:log-group:{group}"
        return [base, f"{base}:*"]


def partition_for(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def role_names(prefix: str) -> dict[str, str]:
    return {kind: f"{prefix}-{kind}-role" for kind in ("sagemaker", "lambda", "states")}


def trust_policy(service: str) -> dict:
    return {"Version": VERSION, "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


TRUSTED_SERVICE = {"sagemaker": "sagemaker.amazonaws.com", "lambda": "lambda.amazonaws.com", "states": "states.amazonaws.com"}


def sagemaker_policy(scope: Scope) -> dict:
    bucket_arn = f"arn:{scope.partition}:s3:::{scope.bucket}"
    repositories = [
        f"arn:{scope.partition}:ecr:{scope.region}:{entry.split(':', 1)[0]}:repository/{entry.split(':', 1)[1]}"
        for entry in scope.image_repositories
    ]
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": "BucketObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"{bucket_arn}/*"},
            {"Sid": "BucketListing", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": bucket_arn},
            # GetAuthorizationToken has no resource-level permissions in IAM.
            {"Sid": "RegistryLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "FrameworkImages", "Effect": "Allow",
             "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
             "Resource": repositories},
            {"Sid": "OwnLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
             "Resource": scope.log_group_arns("/aws/sagemaker/TrainingJobs") + scope.log_group_arns("/aws/sagemaker/Endpoints/" + scope.endpoint_name)},
            {"Sid": "Metrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
             "Condition": {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}},
        ],
    }


def lambda_policy(scope: Scope) -> dict:
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": "ReadImages", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:{scope.partition}:s3:::{scope.bucket}/*"},
            # S3 answers GetObject of a missing key with 404 NoSuchKey only to a caller allowed s3:ListBucket on the
            # bucket, else 403 AccessDenied (Amazon S3 API Reference, GetObject, "Permissions"): without it
            # serializeImageData would report a missing image as a permissions problem. Not narrowed by s3:prefix:
            # AWS documents no s3:prefix value for that check, so a prefix condition could leave the 403 on AWS.
            {"Sid": "TellMissingImages", "Effect": "Allow", "Action": "s3:ListBucket",
             "Resource": f"arn:{scope.partition}:s3:::{scope.bucket}"},
            {"Sid": "InvokeEndpoint", "Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": scope.endpoint_arn()},
            {"Sid": "OwnLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": [arn for name in scope.function_names for arn in scope.log_group_arns(f"/aws/lambda/{name}")]},
        ],
    }


def states_policy(scope: Scope) -> dict:
    arns = [scope.function_arn(name) for name in scope.function_names]
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": "InvokeWorkflowFunctions", "Effect": "Allow", "Action": "lambda:InvokeFunction",
             "Resource": arns + [f"{arn}:*" for arn in arns]},
        ],
    }




def _as_dict(document) -> dict:
    # boto3 decodes IAM's URL-encoded JSON into a dict; other SDK paths may give a string.
    return json.loads(document) if isinstance(document, str) else document


def ensure_role(
    iam, *, name: str, trust: dict, policy: dict, tags: dict[str, str], progress: Progress | None = None,
    before_create: Callable[[], None] | None = None,
) -> tuple[str, str]:
    """Create the role or bring its trust and inline policy up to date. Returns (arn, what was done).

    before_create runs just before CreateRole (the deploy records the name there).
    """
    actions = []
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchEntity":
            raise
        if before_create:
            before_create()
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description="Scones deploy role (created by `scones deploy`, removed by `scones destroy`)",
            Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
        )["Role"]
        actions.append("created")
    else:
        found = {tag["Key"]: tag["Value"] for tag in role.get("Tags", [])}
        if any(found.get(key) != value for key, value in tags.items()):
            # Adopting it would rewrite its policy and let `scones destroy` delete it.
            raise DeployError(f"IAM role {name} exists but was not created by this deploy (tags {found}); "
                              f"choose another --prefix or remove the role")
        if _as_dict(role["AssumeRolePolicyDocument"]) != trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            actions.append("trust updated")
    current = None   # a role just created has no inline policy: one IAM call fewer (`scones up` makes six)
    if "created" not in actions:
        try:
            current = _as_dict(iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"])
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchEntity":
                raise
    if current != policy:
        iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
        if "created" not in actions:
            actions.append("policy updated")
    action = ", ".join(actions) or "unchanged"
    if progress:
        progress(f"IAM role {name}: {action}")
    return role["Arn"], action


def delete_role(iam, name: str, progress: Progress | None = None) -> None:
    """Delete the role with its inline and attached policies; a role already gone is skipped."""
    try:
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=name)
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchEntity":
            raise
        return
    if progress:
        progress(f"deleted IAM role {name}")


# --- event-driven runs (deploy/event_runs.py): two roles of their own, beside the three above -------

def events_role_policy(scope: Scope, state_machine_arn: str) -> dict:
    """EventBridge's role on the photo-landed rule: start this one workflow, nothing else."""
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": "StartWorkflow", "Effect": "Allow", "Action": "states:StartExecution", "Resource": state_machine_arn},
        ],
    }


def results_writer_policy(scope: Scope, *, state_machine_name: str, function: str, results_prefix: str) -> dict:
    """writeResult's role: write under results/ only, read its own workflow's executions, write its own logs."""
    executions = f"arn:{scope.partition}:states:{scope.region}:{scope.account_id}:execution:{state_machine_name}:*"
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": "WriteResults", "Effect": "Allow", "Action": "s3:PutObject",
             "Resource": f"arn:{scope.partition}:s3:::{scope.bucket}/{results_prefix}*"},
            {"Sid": "ReadRunPayloads", "Effect": "Allow", "Action": "states:DescribeExecution", "Resource": executions},
            {"Sid": "OwnLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": scope.log_group_arns(f"/aws/lambda/{function}")},
        ],
    }


# --- the drift monitor (deploy/monitoring.py): a role of its own ------------------------------------

def monitor_policy(scope: Scope, *, function: str, capture_prefix: str, monitor_prefix: str, namespace: str) -> dict:
    """monitorDrift's role: read this endpoint's capture, read and write its own monitoring prefix (list
    only those two), publish metrics in its namespace alone, write its own logs."""
    bucket_arn = f"arn:{scope.partition}:s3:::{scope.bucket}"
    return {
        "Version": VERSION,
        "Statement": [
            {"Sid": "ListCaptureAndMonitoring", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [f"{capture_prefix}*", f"{monitor_prefix}*"]}}},
            {"Sid": "ReadCapture", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": [f"{bucket_arn}/{capture_prefix}*", f"{bucket_arn}/{monitor_prefix}*"]},
            {"Sid": "WriteMonitoring", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{bucket_arn}/{monitor_prefix}*"},
            # PutMetricData has no resource-level permissions; the namespace condition scopes it.
            {"Sid": "PublishMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
             "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}}},
            {"Sid": "OwnLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": scope.log_group_arns(f"/aws/lambda/{function}")},
        ],
    }
