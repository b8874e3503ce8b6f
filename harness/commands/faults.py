"""`scones faults add|list|clear|time-scale`: the local stack's fault rules and Step Functions time scale."""
from __future__ import annotations

import json

import click

from scones.harness.commands.options import json_option
from scones.harness.faults import describe

RULE_HELP = ("A rule as JSON, e.g. '{\"service\": \"sagemaker-runtime\", \"operation\": \"InvokeEndpoint\", "
             "\"error\": \"ThrottlingException\", \"times\": 2}' (README: Fault rules), or build it with the options.")


def _client(localstack_url: str | None):
    from scones.harness.faults import FaultsClient

    if localstack_url:
        return FaultsClient(localstack_url)
    from scones.harness.targets import TargetNotFound, load_target

    try:
        record = load_target("local").record
    except TargetNotFound as error:
        raise click.ClickException(f"{error} (or name LocalStack with --localstack-url)") from None
    return FaultsClient(record["localstack"]["url"])


def _call(action):
    from scones.harness.faults import FaultsAPIError

    try:
        return action()
    except FaultsAPIError as error:
        raise click.ClickException(str(error)) from None


localstack_option = click.option("--localstack-url", help="LocalStack to talk to (default: the recorded local stack's).")


@click.group()
def faults() -> None:
    """Fault rules and the Step Functions time scale of the local stack (README: Fault rules)."""


@faults.command("add")
@click.argument("rule_json", required=False)
@click.option("--service", help="botocore's service name, e.g. sagemaker-runtime, lambda, s3.")
@click.option("--operation", help="botocore's operation name, e.g. InvokeEndpoint, Invoke, GetObject.")
@click.option("--resource", help="Function, endpoint or state machine name/ARN; for S3 a bucket/key prefix.")
@click.option("--error", "error_code", help="Error code, e.g. ThrottlingException, ServiceException, SlowDown.")
@click.option("--status", type=int, help="HTTP status of an error code AWS does not document for the service.")
@click.option("--message", help="The error's message (default: AWS's wording).")
@click.option("--function-error", type=click.Choice(["timeout", "out_of_memory", "init_error"]))
@click.option("--latency-ms", type=float)
@click.option("--after", type=int, help="Skip the first N matching calls.")
@click.option("--times", type=int, help="Fire at most N times (default: every matching call).")
@click.option("--nth", type=int, help="Fire on the Nth matching call only.")
@click.option("--probability", type=float, help="Fire with this probability (needs --seed).")
@click.option("--seed", type=int)
@localstack_option
def add(rule_json, service, operation, resource, error_code, status, message, function_error, latency_ms, after,
        times, nth, probability, seed, localstack_url) -> None:
    """Add a rule (JSON argument or options); prints it with its id."""
    rule: dict = {}
    if rule_json:
        try:
            rule = json.loads(rule_json)
        except ValueError as problem:
            raise click.BadParameter(f"not JSON: {problem}", param_hint="RULE_JSON") from None
        if not isinstance(rule, dict):
            raise click.BadParameter("a rule is a JSON object", param_hint="RULE_JSON")
    error_spec = {key: value for key, value in (("code", error_code), ("status", status), ("message", message)) if value}
    if error_spec and "code" not in error_spec:
        raise click.UsageError("--status and --message go with --error CODE")
    options = {"service": service, "operation": operation, "resource": resource, "error": error_spec or None,
               "function_error": function_error, "latency_ms": latency_ms, "after": after, "times": times,
               "nth": nth, "probability": probability, "seed": seed}
    rule.update({key: value for key, value in options.items() if value is not None})
    if not rule:
        raise click.UsageError(f"no rule given. {RULE_HELP}")
    added = _call(lambda: _client(localstack_url).add(rule))
    click.echo(describe(added))


@faults.command("list")
@json_option("Print the rules as JSON.")
@localstack_option
def list_rules(as_json, localstack_url) -> None:
    """The rules in force, with how many calls each matched and fired on."""
    rules = _call(lambda: _client(localstack_url).list())
    if as_json:
        click.echo(json.dumps(rules, indent=2))
    elif not rules:
        click.echo("no fault rules")
    for rule in [] if as_json else rules:
        click.echo(describe(rule))


@faults.command("clear")
@click.argument("rule_id", required=False)
@localstack_option
def clear(rule_id, localstack_url) -> None:
    """Remove every rule (or the one RULE_ID); prints what was removed with its counts."""
    removed = _call(lambda: _client(localstack_url).clear(rule_id))
    click.echo(f"removed {len(removed)} rule(s)")
    for rule in removed:
        click.echo(describe(rule))


@faults.command("time-scale")
@click.argument("scale", required=False, type=float)
@localstack_option
def time_scale(scale, localstack_url) -> None:
    """Show the Step Functions time scale, or set it (e.g. 0.01: waits and retries 100 times faster)."""
    client = _client(localstack_url)
    state = _call(lambda: client.set_time_scale(scale) if scale is not None else client.time_scale())
    click.echo(f"Step Functions time scale {state['scale']:g}"
               + ("" if state["active"] else f" (patch inactive: {state['reason']})"))
