"""`scones up`, `scones run`, `scones status`, `scones down`: the local stack from the shell."""
from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

import click

from scones import settings
from scones.contract import CLASSES
from scones.deploy import local as local_target
from scones.harness import executions, targets
from scones.harness.commands.options import (
    concurrency_option,
    endpoint_name_option,
    json_option,
    port_option,
    prefix_option,
    state_dir_option,
    target_option,
    threshold_option,
    timeout_option,
)
from scones.harness.executions import DEFAULT_TIMEOUT_S
from scones.harness.faults import FaultsClient
from scones.harness.iam import denials as iam_denials
from scones.harness.iam.names import MODE_ENV as IAM_MODE_ENV
from scones.harness.iam.names import MODES as IAM_MODES
from scones.harness.lambda_executor.names import TIME_SCALE_ENV


def _progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


@click.command()
@state_dir_option()
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False), help=f"Staged images (default ${settings.DATA_DIR}, data_dir in [tool.scones], or <state dir>/data).")
@click.option("--model", "model_dir", type=click.Path(exists=True), help="Directory with model.tar.gz (default: the cached trained model).")
@port_option("--localstack-port", f"LocalStack port (default ${settings.LOCALSTACK_PORT}, localstack_port in [tool.scones], or {local_target.DEFAULT_LOCALSTACK_PORT}).")
@port_option("--endpoint-port", f"Route mode's endpoint server port (default ${settings.ENDPOINT_PORT}, endpoint_port in "
             f"[tool.scones], or {local_target.DEFAULT_ENDPOINT_PORT}); in api mode, the default, the control plane's "
             "endpoint host takes a free port.")
@prefix_option()
@click.option("--bucket", default=local_target.DEFAULT_BUCKET, show_default=True)
@endpoint_name_option()
@threshold_option()
@click.option("--no-data", is_flag=True, help="Skip uploading the staged images.")
@click.option("--upload-train", is_flag=True,
              help="Also upload train/ to the bucket (default: test/ and the .lst files only; local training reads from disk).")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True),
              help="Scale Step Functions' Retry intervals, Wait states and timeouts, e.g. 0.01 (README: Fault rules); "
                   f"default ${TIME_SCALE_ENV} or 1.")
@click.option("--iam", "iam_mode", type=click.Choice(IAM_MODES),
              help=f"Check calls made with a role's credentials against its policies (README: IAM checked locally); "
                   f"default ${IAM_MODE_ENV} or enforce. Read when LocalStack starts.")
def up(state_dir, data_dir, model_dir, localstack_port, endpoint_port, prefix, bucket, endpoint_name, threshold, no_data,
       upload_train, time_scale, iam_mode):
    """Bring the local stack up (LocalStack, endpoint server, workflow, test data); attaches to what already runs."""
    from pathlib import Path

    from scones.harness import stack

    # LocalStack reads both when it starts (harness/localstack.py passes them on); the scale also changes at once below.
    if time_scale is not None:
        os.environ[TIME_SCALE_ENV] = str(time_scale)
    if iam_mode is not None:
        os.environ[IAM_MODE_ENV] = iam_mode

    try:
        config = stack.StackConfig.from_environment(
            state_dir, data_dir, localstack_port, endpoint_port,
            prefix=prefix, bucket=bucket, endpoint_name=endpoint_name, threshold=threshold,
            model_dir=Path(model_dir) if model_dir else None, upload_data=not no_data, upload_train=upload_train,
        )
        record = stack.up(config, progress=_progress)
    except stack.StackError as error:
        raise click.ClickException(f"scones up failed: {error}") from error
    except stack.StopSignal as stopped:
        if stopped.stack_left_up:
            click.echo(f"scones up: {stopped} after the stack was up; it is recorded and left running "
                       "(`scones down` stops it)", err=True)
        else:
            click.echo(f"scones up: {stopped}; stopped what it had started", err=True)
        sys.exit(128 + stopped.signum)   # the shell's status for death by that signal
    if time_scale is not None:   # an attached LocalStack started with another scale
        FaultsClient(record["localstack"]["url"]).set_time_scale(time_scale)
    _print_record(record)
    _print_restored(record)
    key = example_key(record)
    attempt = f"`scones run {key}`" if key else f"`scones run <key in s3://{record['outputs']['bucket']}>`"
    click.echo(f"ready in {record['up_seconds']:.1f} s; try it with {attempt}, stop it with `scones down`")


def example_key(record: dict) -> str | None:
    """A key `up` uploaded (the first staged test image), for the line that says how to try the stack."""
    if not (record.get("dataset") or {}).get("parts") or not record.get("data_dir"):
        return None
    for class_name in CLASSES:
        images = sorted((Path(record["data_dir"]) / "test" / class_name).glob("*.png"))
        if images:
            return f"test/{class_name}/{images[0].name}"
    return None


def _print_restored(record: dict) -> None:
    """What `up` put back after LocalStack lost its data (a crash, or `down` + `up`): LocalStack keeps none."""
    restored = record.get("capture_restored") or {}
    dataset = record.get("dataset") or {}
    if restored.get("files"):
        click.echo(f"restored: {restored.get('records', 0)} capture records in {restored.get('files', 0)} files "
                   f"from the spool ({restored.get('seconds', 0):.2f} s), {dataset.get('uploaded', 0)} staged "
                   f"objects uploaded ({dataset.get('skipped', 0)} already there)")


def _print_record(record: dict) -> None:
    outputs = record["outputs"]
    rows = [
        ("LocalStack", record["localstack"]["url"] + f"  (pid {record['localstack'].get('pid')})"),
        ("endpoint server", record["endpoint"]["url"] + f"  (pid {record['endpoint'].get('pid')})"),
        ("endpoint name", outputs["endpoint_name"]),
        ("model", record["endpoint"].get("model_dir", "")),
        ("bucket", f"s3://{outputs['bucket']}"),
        ("data capture", outputs["capture_s3_uri"]),
        ("state machine", outputs["state_machine_arn"]),
    ]
    if outputs.get("intake_s3_uri"):   # event-driven runs (deploy/event_runs.py)
        rows += [("photos in", outputs["intake_s3_uri"]), ("results out", outputs["results_s3_uri"])]
    rows += [(f"lambda {name}", arn) for name, arn in sorted(outputs["function_arns"].items())]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"{label:<{width}}  {value}")
    click.echo("use it with: AWS_ENDPOINT_URL=" + record["localstack"]["url"]
               + " AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=" + outputs["region"])


@click.command()
@click.argument("keys", nargs=-1, required=True)
@target_option()
@state_dir_option()
@click.option("--bucket", help="Bucket of the keys (default: the target's bucket).")
@concurrency_option(1)
@timeout_option(DEFAULT_TIMEOUT_S, "Seconds to wait for each execution.")
@json_option("Print one JSON document per execution instead of a table.")
def run(keys, target, state_dir, bucket, concurrency, timeout, as_json):
    """Run the workflow on S3 KEYS (keys in the target's bucket, or s3://bucket/key), wait, and print
    key, status, class, confidence, error, duration.

    Exits with status 1 when any execution did not succeed.
    """
    try:
        deployed = targets.load_target(target, state_dir)
    except targets.TargetNotFound as error:
        raise click.ClickException(str(error)) from error
    inputs = [workflow_input(key, bucket) for key in keys]
    started = time.perf_counter()
    with click.progressbar(length=len(inputs), label="executions", file=sys.stderr,
                           hidden=len(inputs) < 2) as bar:
        results = executions.run_executions(deployed, inputs, concurrency=concurrency, timeout=timeout,
                                 progress=lambda _result: bar.update(1))
    elapsed = time.perf_counter() - started
    if as_json:
        for result in results:
            document = result.to_dict()
            document.pop("output", None)  # holds the base64 image
            click.echo(json.dumps(document, default=str))
    else:
        click.echo(results_table(results))
        click.echo(f"{sum(r.succeeded for r in results)}/{len(results)} succeeded in {elapsed:.2f} s")
    if not all(r.succeeded for r in results):
        sys.exit(1)


ERROR_LINES = 4        # longer errors are elided; the full message is in `--json` and in the execution history
MIN_ERROR_WIDTH = 40


def workflow_input(key: str, bucket: str | None):
    """A key in the target's bucket, a key in --bucket, or a full s3://bucket/key URI."""
    if key.startswith("s3://"):
        uri_bucket, _, uri_key = key[len("s3://"):].partition("/")
        if not uri_bucket or not uri_key:
            raise click.BadParameter(f"{key!r} is not an s3://bucket/key URI", param_hint="KEYS")
        return {"s3_bucket": uri_bucket, "s3_key": uri_key}
    return {"s3_bucket": bucket, "s3_key": key} if bucket else key


def _error_text(result) -> str:
    if not result.error:
        return "-"
    text = result.error + (f" in {result.failed_state}" if result.failed_state else "")
    message = result.error_message
    return text + (f": {message}" if message and message != result.error else "")


def results_table(results, width: int | None = None) -> str:
    """One row per execution; the error column wraps at word boundaries (never inside a number or a key)
    to fit `width` (default: the terminal's), and is elided after ERROR_LINES lines."""
    header = ("key", "status", "class", "confidence", "error", "duration")
    rows: list[list[tuple[str, ...]]] = [[(cell,) for cell in header]]
    for result in results:
        rows.append([
            (result.key,),
            (result.status,),
            (result.predicted_class or "-",),
            (f"{result.confidence:.4f}" if result.confidence is not None else "-",),
            (_error_text(result),),   # wrapped into lines below, once the room for it is known
            (f"{result.duration * 1000:.0f} ms" if result.duration is not None else "-",),
        ])
    error_column = header.index("error")
    widths = [0 if i == error_column else max(len(row[i][0]) for row in rows) for i in range(len(header))]
    others = sum(w for i, w in enumerate(widths) if i != error_column) + 2 * (len(header) - 1)
    room = max(MIN_ERROR_WIDTH, (width or shutil.get_terminal_size((200, 24)).columns) - others)
    for row in rows[1:]:
        row[error_column] = tuple(textwrap.wrap(row[error_column][0], room, max_lines=ERROR_LINES, placeholder=" ...",
                                                break_long_words=False, break_on_hyphens=False)) or ("-",)
    widths[error_column] = max(len(line) for row in rows for line in row[error_column])
    lines = []
    for row in rows:
        for index in range(max(len(cells) for cells in row)):
            cells = [cells[index] if index < len(cells) else "" for cells in row]
            lines.append("  ".join(cell.rjust(w) if column == len(header) - 1 else cell.ljust(w)
                                   for column, (cell, w) in enumerate(zip(cells, widths))).rstrip())
    return "\n".join(lines)


@click.command()
@target_option(help="aws: the deployed stack's endpoint autoscaling, drift monitor runs and alarm states.")
@state_dir_option()
@json_option()
def status(target, state_dir, as_json):
    """Show whether the local stack is up, its parts, ports, pids and memory (and its drift monitor)."""
    from scones.harness import stack

    if target == "aws":
        _aws_status(state_dir, as_json)
        return
    report = stack.status(state_dir)
    localstack_part = (report.get("parts") or {}).get("localstack") or {}
    if localstack_part.get("healthy"):
        report["iam"] = iam_denials.fetch(localstack_part["url"])
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    if report["record"] is None and report.get("found"):
        _print_unrecorded(report)
    if report.get("record_problem"):
        raise click.ClickException(f"scones status failed: {report['record_problem']}")
    if report["record"] is None and report.get("found"):
        sys.exit(1)
    if report["record"] is None:
        click.echo(f"local stack: down (no record at {report['record_path']})")
        sys.exit(3)
    if report.get("managed_by"):
        _print_compose_status(report)
        return
    click.echo(f"local stack: {'up' if report['up'] else 'DEGRADED'} (record {report['record_path']})")
    for name, part in report["parts"].items():
        state = "running" if part["alive"] else "not running"
        listening = "listening" if part["listening"] else "not listening"
        health = "healthy" if part["healthy"] else f"UNHEALTHY: {part['problem']}"
        click.echo(f"  {name:<10} {part.get('url')}  pid {part.get('pid')}  {state}, {listening}, {health}")
    for entry in report.get("sagemaker", []):   # the control plane's endpoint hosts, spare and training jobs
        click.echo(f"  sagemaker  {entry['kind']} {entry['name']}  pid {entry['pid']}  log {entry['log']}")
    _echo_workflow(report["record"]["outputs"])
    click.echo(f"  {len(report['processes'])} processes, {report['rss_bytes'] / 2**20:.0f} MiB resident")
    if report["up"]:
        _echo_operations("local", state_dir)
    if "iam" in report:
        for line in iam_denials.summary_lines(report["iam"]):
            click.echo(f"  {line}")
    if not report["up"]:
        unhealthy = ", ".join(name for name, part in report["parts"].items() if not part["healthy"])
        click.echo(f"  unhealthy: {unhealthy}; run `scones up` to repair it, or `scones down` to clear it")
        sys.exit(1)


def _print_unrecorded(report: dict) -> None:
    """Processes of this stack run, but no complete record names them (a killed `up`, a damaged record)."""
    why = report.get("record_problem") or f"no record at {report['record_path']}"
    click.echo(f"local stack: INCOMPLETE ({why})")
    for name, pids in report["found"].items():
        click.echo(f"  {name:<10} running as pid {', '.join(map(str, pids))}")
    click.echo("  `scones up` adopts or replaces them; `scones down` stops them")


def _echo_operations(target_name: str, state_dir) -> dict | None:
    """Autoscaling, drift monitor runs and alarm states (harness/operations.py); a line saying why not otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    from scones.harness import operations
    from scones.harness.targets import load_target

    try:
        description = operations.describe(load_target(target_name, state_dir))
    except (BotoCoreError, ClientError) as error:
        click.echo(f"  drift monitor and alarms: cannot be read ({error})")
        return None
    for line in operations.lines(description):
        click.echo(f"  {line}")
    return description


def _aws_status(state_dir, as_json: bool) -> None:
    from scones.harness import operations
    from scones.harness.targets import TargetNotFound, load_target

    try:
        deployed = load_target("aws", state_dir)
    except TargetNotFound as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps({"record": deployed.record, **operations.describe(deployed)}, indent=2, default=str))
        return
    record = deployed.record
    click.echo(f"aws stack: {record['prefix']} in {record['account_id']}/{record['region']}, steps done "
               f"{', '.join(record.get('steps_done') or []) or 'none'} (record {deployed.record_path})")
    click.echo(f"  endpoint {deployed.endpoint_name}")
    _echo_workflow(record["outputs"])
    _echo_operations("aws", state_dir)


def _echo_workflow(outputs: dict) -> None:
    click.echo(f"  state machine {outputs['state_machine_arn']}")
    click.echo(f"  bucket s3://{outputs['bucket']}, capture {outputs['capture_s3_uri']}")


def _print_compose_status(report: dict) -> None:
    """No pids to show: the processes live in containers. Say who manages it and what answers."""
    from scones.harness import stack

    click.echo(f"local stack: {'up' if report['up'] else 'DEGRADED'}, managed by {report['managed_by']} "
               f"(record {report['record_path']})")
    for name, part in report["parts"].items():
        answers = "answers" if part["answers"] else f"does not answer: {part['problem']}"
        listening = "listening" if part["listening"] else "not listening"
        click.echo(f"  {name:<10} {part.get('url')}  {answers}, {listening}")
    _echo_workflow(report["record"]["outputs"])
    click.echo(f"  `{stack.COMPOSE_DOWN}` stops it (not `scones down`)")
    if not report["up"]:
        click.echo("  `harness/compose/stack.sh ps` and `logs` show what is wrong")
        sys.exit(1)


@click.command()
@state_dir_option()
def down(state_dir):
    """Stop everything `scones up` started (endpoint server first, so capture is flushed)."""
    from scones.harness import stack

    try:
        report = stack.down(state_dir, progress=_progress)
    except stack.StackError as error:
        raise click.ClickException(str(error)) from error
    if report["leftover_processes"] or report["open_ports"]:
        raise click.ClickException(f"left behind: processes {report['leftover_processes']}, "
                                   f"open ports {report['open_ports']}")
    click.echo("local stack: down")
