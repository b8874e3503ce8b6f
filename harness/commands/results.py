"""`scones results`: what the event-driven runs wrote under results/, one line per photo (deploy/event_runs.py)."""
from __future__ import annotations

import json

import click

from scones.harness.commands.options import json_option, state_dir_option, target_option
from scones.harness.targets import TargetNotFound, load_target
from scones.lambdas.run_results import RESULT_SUFFIX, RunResult


@click.command()
@target_option()
@click.option("--under", default="", help="Only photos whose key starts with this (e.g. incoming/today/).")
@state_dir_option()
@json_option("Print each result as a JSON line instead of the table.")
def results(target: str, under: str, state_dir: str | None, as_json: bool) -> None:
    """List the result of each photo dropped under the intake prefix: its class, or its error."""
    try:
        deployed = load_target(target, state_dir)
    except TargetNotFound as error:
        raise click.ClickException(str(error)) from None
    uri = (deployed.record.get("outputs") or {}).get("results_s3_uri")
    if not uri:
        raise click.ClickException(f"the {target} stack has no event-driven runs: deploy it again "
                                   f"(`scones up` or `scones deploy --target aws`)")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = deployed.client("s3")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + under):
        for item in page.get("Contents", []):
            if not item["Key"].endswith(RESULT_SUFFIX):
                continue
            result = RunResult.from_json(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            count += 1
            if as_json:
                click.echo(json.dumps(json.loads(result.to_json()), sort_keys=True))
            elif result.status == "SUCCEEDED":
                click.echo(f"{result.s3_key}  {result.predicted_class} ({result.confidence:.4f})")
            else:
                click.echo(f"{result.s3_key}  {result.status} {result.error}: {result.message}")
    if not as_json:
        click.echo(f"{count} results under {uri}{under}", err=True)
