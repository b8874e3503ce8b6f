"""harness/iam/evaluate.py on AWS's documented policy evaluation examples; each test names its source page
(docs.aws.amazon.com/IAM/latest/UserGuide/...)."""
from __future__ import annotations

import pytest

from scones.harness.iam.evaluate import Decision, PolicyError, Principal, Request, arn_like, denial_message, evaluate, matches

SESSION = Principal.assumed_role("aws", "111122223333", "scones-lambda-role", "serializeImageData")


def decide(action: str, resource: str = "*", *policies, context=None, resource_policies=()) -> Decision:
    return evaluate(Request(action, resource, SESSION, context or {}), policies, resource_policies).decision


CARLOS = {"Version": "2012-10-17", "Statement": [
    {"Sid": "AllowS3ListRead", "Effect": "Allow",
     "Action": ["s3:GetBucketLocation", "s3:GetAccountPublicAccessBlock", "s3:ListAccessPoints", "s3:ListAllMyBuckets"],
     "Resource": "arn:aws:s3:::*"},
    {"Sid": "AllowS3Self", "Effect": "Allow", "Action": "s3:*",
     "Resource": ["arn:aws:s3:::amzn-s3-demo-bucket-carlossalazar/*", "arn:aws:s3:::amzn-s3-demo-bucket-carlossalazar"]},
    {"Sid": "DenyS3Logs", "Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::*log*"},
]}


def test_carlos_own_bucket_allowed_logs_bucket_explicitly_denied():
    """reference_policies_evaluation-logic_policy-eval-basics.html, "Example identity-based and resource-based
    policy evaluation": AllowS3Self gives Carlos his own bucket; DenyS3Logs denies any bucket with "log" in
    its name, so saving a file to amzn-s3-demo-bucket-carlossalazar-logs is denied."""
    assert decide("s3:PutObject", "arn:aws:s3:::amzn-s3-demo-bucket-carlossalazar/file.txt", CARLOS) is Decision.ALLOW
    assert decide("s3:PutObject", "arn:aws:s3:::amzn-s3-demo-bucket-carlossalazar-logs/file.txt", CARLOS) \
        is Decision.EXPLICIT_DENY
    assert decide("s3:ListAllMyBuckets", "arn:aws:s3:::anything", CARLOS) is Decision.ALLOW
    assert decide("s3:GetObject", "arn:aws:s3:::someone-else/file.txt", CARLOS) is Decision.IMPLICIT_DENY


def test_resource_policy_allows_when_identity_policy_is_silent_and_deny_in_either_wins():
    """reference_policies_evaluation-logic_policy-eval-basics.html: "If either the identity-based policy or the
    resource-based policy within the same account allows the request and the other doesn't, the request is
    still allowed"; "An explicit deny in any of the policies overrides the allow"."""
    bucket_policy = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": SESSION.role_arn}, "Action": "s3:GetObject",
                                    "Resource": "arn:aws:s3:::b/*"}]}
    assert decide("s3:GetObject", "arn:aws:s3:::b/k", resource_policies=[bucket_policy]) is Decision.ALLOW
    other = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/other"},
                            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}
    assert decide("s3:GetObject", "arn:aws:s3:::b/k", resource_policies=[other]) is Decision.IMPLICIT_DENY
    deny = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}]}
    allow_all = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    result = evaluate(Request("s3:GetObject", "arn:aws:s3:::b/k", SESSION), [allow_all], [deny])
    assert (result.decision, result.denied_by) == (Decision.EXPLICIT_DENY, "resource-based")


def test_explicit_and_implicit_denies():
    """reference_policies_evaluation-logic_AccessPolicyLanguage_Interplay.html: AllowGetList allows iam:Get* and
    iam:List*; every other IAM action such as iam:CreatePolicy is implicitly denied; DenyReports (iam:*Report*)
    explicitly denies iam:GetOrganizationsAccessReport although AllowGetList matches it."""
    policy = {"Statement": [
        {"Sid": "AllowGetList", "Effect": "Allow", "Action": ["iam:Get*", "iam:List*"], "Resource": "*"},
        {"Sid": "DenyReports", "Effect": "Deny", "Action": "iam:*Report", "Resource": "*"},
    ]}
    assert decide("iam:GetUser", "*", policy) is Decision.ALLOW
    assert decide("iam:CreatePolicy", "*", policy) is Decision.IMPLICIT_DENY
    assert decide("iam:GenerateCredentialReport", "*", policy) is Decision.EXPLICIT_DENY
    assert decide("iam:GetCredentialReport", "*", policy) is Decision.EXPLICIT_DENY


def test_no_policy_is_an_implicit_deny():
    """reference_policies_evaluation-logic.html: "By default, all requests are implicitly denied"."""
    assert decide("s3:GetObject", "arn:aws:s3:::b/k") is Decision.IMPLICIT_DENY


def test_not_action_allows_everything_but_the_listed_service():
    """reference_policies_elements_notaction.html: Allow with NotAction "iam:*" and Resource "*" gives access to
    every service's actions except IAM's; action names match case-insensitively
    (reference_policies_elements_action.html: "Action names are not case-sensitive")."""
    policy = {"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}
    assert decide("s3:GetObject", "arn:aws:s3:::b/k", policy) is Decision.ALLOW
    assert decide("iam:CreateUser", "*", policy) is Decision.IMPLICIT_DENY
    assert decide("IAM:createuser", "*", policy) is Decision.IMPLICIT_DENY
    lower = {"Statement": [{"Effect": "Allow", "Action": "S3:getobject", "Resource": "*"}]}
    assert decide("s3:GetObject", "arn:aws:s3:::b/k", lower) is Decision.ALLOW


def test_not_action_deny_without_mfa():
    """reference_policies_elements_notaction.html, "Using NotAction with Deny": deny everything except the IAM
    actions listed when aws:MultiFactorAuthPresent is false or absent (BoolIfExists)."""
    policy = {"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Sid": "DenyAllUsersNotUsingMFA", "Effect": "Deny", "NotAction": "iam:*", "Resource": "*",
         "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}},
    ]}
    assert decide("s3:GetObject", "arn:aws:s3:::b/k", policy) is Decision.EXPLICIT_DENY
    assert decide("s3:GetObject", "arn:aws:s3:::b/k", policy, context={"aws:MultiFactorAuthPresent": "false"}) \
        is Decision.EXPLICIT_DENY
    assert decide("s3:GetObject", "arn:aws:s3:::b/k", policy, context={"aws:MultiFactorAuthPresent": True}) is Decision.ALLOW
    assert decide("iam:ListUsers", "*", policy) is Decision.ALLOW


def test_not_resource():
    """reference_policies_elements_notresource.html: Allow s3:* with NotResource HRBucket/Payroll and
    HRBucket/Payroll/* gives every S3 resource except the payroll folder."""
    policy = {"Statement": [{"Effect": "Allow", "Action": "s3:*",
                             "NotResource": ["arn:aws:s3:::HRBucket/Payroll", "arn:aws:s3:::HRBucket/Payroll/*"]}]}
    assert decide("s3:GetObject", "arn:aws:s3:::HRBucket/Other/file", policy) is Decision.ALLOW
    assert decide("s3:GetObject", "arn:aws:s3:::HRBucket/Payroll/june.csv", policy) is Decision.IMPLICIT_DENY
    assert decide("s3:ListBucket", "arn:aws:s3:::HRBucket/Payroll", policy) is Decision.IMPLICIT_DENY


def test_wildcards_in_resources():
    """reference_policies_elements_resource.html, "Including wildcard characters (* and ?) in resource ARNs":
    `*` any combination of characters, `?` any single character, within each ARN segment; ARNs are
    case-sensitive. The ArnLike operator compares "each of the six colon-delimited components" separately
    (reference_policies_elements_condition_operators.html#Conditions_ARN)."""
    assert matches("arn:aws:s3:::b/img?.png", "arn:aws:s3:::b/img1.png")
    assert not matches("arn:aws:s3:::b/img?.png", "arn:aws:s3:::b/img10.png")
    assert not matches("arn:aws:s3:::b/a.png", "arn:aws:s3:::b/aXpng")       # a dot is a dot
    assert not arn_like("arn:aws:s3:::B/*", "arn:aws:s3:::b/k")
    assert arn_like("arn:aws:logs:us-east-1:1:log-group:/aws/lambda/f:*", "arn:aws:logs:us-east-1:1:log-group:/aws/lambda/f:log-stream:s")
    assert arn_like("arn:aws:lambda:*:*:function:*", "arn:aws:lambda:us-east-1:1:function:f")


def test_multiple_values_or_multiple_keys_and():
    """reference_policies_condition-logic-multiple-context-keys-or-values.html: several condition operators or
    keys in one block are ANDed; several values for one key are ORed."""
    policy = {"Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
                             "Condition": {"StringLike": {"s3:prefix": ["capture/*", "monitoring/*"]},
                                           "StringEquals": {"aws:RequestedRegion": "us-east-1"}}}]}
    both = {"s3:prefix": "monitoring/x", "aws:RequestedRegion": "us-east-1"}
    assert decide("s3:ListBucket", "arn:aws:s3:::b", policy, context=both) is Decision.ALLOW
    assert decide("s3:ListBucket", "arn:aws:s3:::b", policy, context={**both, "s3:prefix": "images/"}) is Decision.IMPLICIT_DENY
    assert decide("s3:ListBucket", "arn:aws:s3:::b", policy, context={**both, "aws:RequestedRegion": "eu-west-1"}) \
        is Decision.IMPLICIT_DENY


def test_missing_key_negated_operators_and_if_exists():
    """reference_policies_elements_condition_operators.html: "If the key that you specify in a policy condition
    is not present in the request context, the values do not match and the condition is false. If the policy
    condition requires that the key is not matched, such as StringNotLike or ArnNotLike, and the right key is
    not present, the condition is true"; ...IfExists: "If the policy key is present in the context of the
    request, process the key as specified in the policy. If the key is not present, evaluate the condition
    element as true"."""
    def allow(condition):
        return {"Statement": [{"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*", "Condition": condition}]}
    assert decide("cloudwatch:PutMetricData", "*", allow({"StringEquals": {"cloudwatch:namespace": "Scones"}})) \
        is Decision.IMPLICIT_DENY
    assert decide("cloudwatch:PutMetricData", "*", allow({"StringNotEquals": {"cloudwatch:namespace": "Scones"}})) \
        is Decision.ALLOW
    assert decide("cloudwatch:PutMetricData", "*", allow({"StringEqualsIfExists": {"cloudwatch:namespace": "Scones"}})) \
        is Decision.ALLOW
    assert decide("cloudwatch:PutMetricData", "*", allow({"StringEqualsIfExists": {"cloudwatch:namespace": "Scones"}}),
                  context={"cloudwatch:namespace": "Other"}) is Decision.IMPLICIT_DENY
    assert decide("cloudwatch:PutMetricData", "*", allow({"StringNotEquals": {"cloudwatch:namespace": ["A", "B"]}}),
                  context={"cloudwatch:namespace": "B"}) is Decision.IMPLICIT_DENY


def test_a_condition_that_does_not_match_means_the_statement_does_not_apply():
    """reference_policies_elements_condition.html: the Condition element "lets you specify conditions for when a
    policy is in effect": a Deny whose condition fails denies nothing."""
    policy = {"Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"StringLike": {"s3:prefix": "secret/*"}}},
    ]}
    assert decide("s3:ListBucket", "arn:aws:s3:::b", policy, context={"s3:prefix": "public/"}) is Decision.ALLOW
    assert decide("s3:ListBucket", "arn:aws:s3:::b", policy, context={"s3:prefix": "secret/x"}) is Decision.EXPLICIT_DENY


def test_numeric_date_bool_ip_arn_and_null_operators():
    """reference_policies_elements_condition_operators.html: Numeric, Date, Bool, IpAddress, ARN and Null
    condition operators."""
    def ok(condition, context):
        policy = {"Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*", "Condition": condition}]}
        return decide("s3:ListBucket", "arn:aws:s3:::b", policy, context=context) is Decision.ALLOW
    assert ok({"NumericLessThanEquals": {"s3:max-keys": "10"}}, {"s3:max-keys": "10"})
    assert not ok({"NumericLessThanEquals": {"s3:max-keys": "10"}}, {"s3:max-keys": "11"})
    assert ok({"DateGreaterThan": {"aws:CurrentTime": "2020-04-01T00:00:00Z"}}, {"aws:CurrentTime": "2026-12-06T21:00:00Z"})
    assert not ok({"DateLessThan": {"aws:CurrentTime": "2020-04-01T00:00:00Z"}}, {"aws:CurrentTime": "2026-12-06T21:00:00Z"})
    assert ok({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": True})
    assert not ok({"Bool": {"aws:SecureTransport": "true"}}, {"aws:SecureTransport": "false"})
    assert ok({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, {"aws:SourceIp": "203.0.113.9"})
    assert ok({"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, {"aws:SourceIp": "198.51.100.1"})
    assert ok({"ArnLike": {"aws:SourceArn": "arn:aws:states:*:111122223333:stateMachine:*"}},
              {"aws:SourceArn": "arn:aws:states:us-east-1:111122223333:stateMachine:wf"})
    assert not ok({"ArnEquals": {"aws:SourceArn": "arn:aws:states:*:111122223333:stateMachine:*"}},
                  {"aws:SourceArn": "arn:aws:states:us-east-1:444455556666:stateMachine:wf"})
    assert ok({"Null": {"aws:TokenIssueTime": "true"}}, {})
    assert not ok({"Null": {"aws:TokenIssueTime": "true"}}, {"aws:TokenIssueTime": "2026-12-06T21:00:00Z"})


def test_set_operators():
    """reference_policies_condition-single-vs-multi-valued-context-keys.html: ForAnyValue is true when at least
    one request value matches; ForAllValues when every request value matches, and also when the key is
    absent from the request."""
    def ok(condition, context):
        policy = {"Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*", "Condition": condition}]}
        return decide("s3:PutObject", "arn:aws:s3:::b/k", policy, context=context) is Decision.ALLOW
    keys = {"aws:TagKeys": ["project", "team"]}
    assert ok({"ForAllValues:StringEquals": {"aws:TagKeys": ["project", "team", "cost"]}}, keys)
    assert not ok({"ForAllValues:StringEquals": {"aws:TagKeys": ["project"]}}, keys)
    assert ok({"ForAllValues:StringEquals": {"aws:TagKeys": ["project"]}}, {})
    assert ok({"ForAnyValue:StringEquals": {"aws:TagKeys": ["team"]}}, keys)
    assert not ok({"ForAnyValue:StringEquals": {"aws:TagKeys": ["team"]}}, {})


def test_denial_messages_as_aws_words_them():
    """troubleshoot_access-denied.html ("Access denied error messages"): "User: <principal> is not authorized to
    perform: <action> on resource: <resource> because no identity-based policy allows the <action> action",
    and "... with an explicit deny in an identity-based policy"."""
    request = Request("s3:GetObject", "arn:aws:s3:::b/images/x.png", SESSION)
    implicit = denial_message(request, evaluate(request, []))
    assert implicit == ("User: arn:aws:sts::111122223333:assumed-role/scones-lambda-role/serializeImageData is not "
                        "authorized to perform: s3:GetObject on resource: arn:aws:s3:::b/images/x.png because no "
                        "identity-based policy allows the s3:GetObject action")
    deny = {"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}
    assert denial_message(request, evaluate(request, [deny])).endswith("with an explicit deny in an identity-based policy")


@pytest.mark.parametrize("statement, words", [
    ({"Effect": "Allow", "Resource": "*"}, "exactly one of Action and NotAction"),
    ({"Effect": "Allow", "Action": "s3:*", "Resource": "*", "NotResource": "*"}, "exactly one of Resource and NotResource"),
    ({"Effect": "Permit", "Action": "s3:*", "Resource": "*"}, "Effect must be Allow or Deny"),
    ({"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"StringSortOf": {"k": "v"}}}, "StringSortOf"),
])
def test_bad_policies_are_refused_by_name(statement, words):
    """IAM refuses such documents at PutRolePolicy (MalformedPolicyDocument); locally they must not pass silently."""
    with pytest.raises(PolicyError, match=words):
        evaluate(Request("s3:GetObject", "arn:aws:s3:::b/k", SESSION, {"k": "v"}), [{"Statement": [statement]}])
