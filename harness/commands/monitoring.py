"""`scones evaluate`, `scones monitor` and `scones report`."""
from __future__ import annotations

import json
import sys
import threading
from datetime import datetime
from pathlib import Path

import click
from botocore.exceptions import EndpointConnectionError
from tqdm import tqdm

from scones import contract, settings
from scones.deploy import monitoring as deployed_monitor
from scones.harness import evaluate as evaluation_module
from scones.harness import monitor as monitoring
from scones.harness import report as reporting
from scones.harness.commands.options import (
    concurrency_option,
    json_option,
    state_dir_option,
    target_option,
    threshold_option,
)
from scones.harness.targets import TargetNotFound, load_target
from scones.lambdas.run_results import FINISHED_STATUSES
from scones.polling import PollTimedOut, poll


def reports_dir(state: str | None = None) -> Path:
    return settings.state_dir(state) / "reports"


def _target(name: str, state: str | None):
    try:
        return load_target(name, state)
    except TargetNotFound as error:
        raise click.ClickException(str(error)) from None


@click.command()
@target_option()
@click.option("--n", "n", type=click.IntRange(min=0), default=20, show_default=True, help="How many random test images; 0 = all of them.")
@click.option("--seed", type=int, default=None, help="Seed for choosing the images (default: a new choice each run).")
@click.option("--ood", type=click.IntRange(0, 1000), default=16, show_default=True,
              help="Also run this many generated non-vehicle images (uploaded under ood/) and report the share refused.")
@concurrency_option(4)
@state_dir_option()
@json_option("Print the summary as JSON instead of the table.")
def evaluate(target: str, n: int, seed: int | None, ood: int, concurrency: int, state_dir: str | None,
             as_json: bool) -> None:
    """Run random test images through the workflow and report accuracy, coverage, failures and out-of-distribution refusals."""
    try:
        settings.check_writable(reports_dir(state_dir))
    except OSError as error:
        raise click.ClickException(
            f"cannot save the evaluation's report in {reports_dir(state_dir)} ({error.strerror or error}): choose "
            f"a writable state dir with --state-dir or ${settings.STATE_DIR}") from None
    deployed = _target(target, state_dir)
    keys = evaluation_module.test_image_keys(deployed.client("s3"), deployed.bucket)
    count = len(keys) if n <= 0 else min(n, len(keys))
    lock = threading.Lock()
    with click.progressbar(length=count + ood, label=f"executions on {target}", file=sys.stderr,
                           show_pos=True) as bar:
        def progress(_result) -> None:  # called from the worker threads
            with lock:
                bar.update(1)
        try:
            result = evaluation_module.evaluate(deployed, n=count, seed=seed, concurrency=concurrency,
                                                progress=progress, keys=keys, ood=ood)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    json_path, csv_path = evaluation_module.save(result, reports_dir(state_dir))
    if as_json:
        click.echo(json.dumps({**result.summary, "report_json": str(json_path), "report_csv": str(csv_path)}, indent=2))
    else:
        click.echo(evaluation_module.format_table(result.rows))
        click.echo()
        click.echo(evaluation_module.format_summary(result.summary))
        click.echo(f"saved {json_path} and {csv_path}")
    # Executions the harness lost contact with (the stack died mid-run) leave the evaluation incomplete: every
    # result is printed above, and the exit status says the figures do not cover all the images asked for.
    unfinished = [row for row in result.rows if row["status"] not in FINISHED_STATUSES]
    if unfinished:
        raise click.ClickException(
            f"{len(unfinished)} of {len(result.rows)} executions did not finish ({unfinished[0]['status']}: "
            f"{unfinished[0]['error']}); the figures cover the others only: is the stack still up? `scones status` tells")


def served_model_baseline(target) -> Path | None:
    """baseline.json of the model the target's endpoint serves, where its record says which."""
    if target is None:
        return None
    model_dir = (target.record.get("endpoint") or {}).get("model_dir") or target.record.get("model_dir")
    path = Path(model_dir) / "baseline.json" if model_dir else None
    return path if path and path.is_file() else None


def wait_for_evaluation_capture(source: str, session, reports: Path, wait_s: float) -> None:
    """Poll the capture until it holds a record for every execution of the latest evaluation.

    The endpoint uploads capture in batches from a background thread, about a second behind.
    """

    path = evaluation_module.latest_evaluation(reports)
    if path is None:
        raise click.ClickException(f"--wait-for-evaluation: no evaluation under {reports}; run `scones evaluate` first")
    document = json.loads(path.read_text())
    started, expected = datetime.fromisoformat(document["started_at"]), int(document["n"])
    def arrived() -> int:
        try:
            return len(monitoring.records_since(monitoring.read_capture(source, session=session).records, started))
        except monitoring.CaptureSourceError:
            return 0

    try:
        poll(arrived, timeout=wait_s, interval=0.5, until=lambda found: found >= expected)
    except PollTimedOut as timed_out:
        click.echo(f"warning: only {timed_out.last} of the {expected} capture records of {path.name} arrived "
                   f"within {wait_s:.0f} s; reporting what is there", err=True)


@click.command()
@click.option("--source", default=None,
              help="s3://bucket/data_capture/ENDPOINT/ or a local folder (default: the target's capture prefix).")
@target_option(help="Whose capture (and AWS session) to use when --source is S3 or absent.")
@click.option("--no-target", is_flag=True, help="Read S3 with the default boto3 session, not a target's.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="baseline.json from training (default: the served model's, else the newest under <state>/models/).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder for monitor.json and plots.")
@threshold_option(None, f"Confidence threshold (default: the baseline's, else {contract.THRESHOLD}).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, help="p-value below which a drift test fails (default 0.01).")
@click.option("--since", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"]),
              default=None, help="Only records inferred at or after this UTC time.")
@click.option("--wait-for-evaluation", is_flag=True,
              help="First wait (polling, up to --wait seconds) until the capture of the latest `scones evaluate` has landed.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=60.0, show_default=True)
@click.option("--fail-on-drift", is_flag=True, help="Exit with status 3 when the drift check fails.")
@click.option("--scheduled", is_flag=True,
              help="Run the target's deployed drift monitor now, as its hourly schedule does (new capture since its "
                   "last run; publishes its metrics, which its alarms watch), and print its run.")
@state_dir_option()
@json_option("Print the summary as JSON.")
def monitor(source, target, no_target, baseline, out, threshold, alpha, since, wait_for_evaluation, wait_s,
            fail_on_drift, scheduled, state_dir, as_json) -> None:
    """Read every captured inference, plot confidence and check drift against the training baseline."""
    if scheduled:
        run_scheduled_monitor(target, state_dir, as_json, fail_on_drift)
        return
    deployed = None
    if not no_target:
        try:
            deployed = load_target(target, state_dir)
        except TargetNotFound as error:
            if source is None:
                raise click.ClickException(f"{error} (or pass --source)") from None
    if source is None:
        if deployed is None:
            raise click.ClickException("--no-target needs --source")
        source = f"{deployed.capture_s3_uri.rstrip('/')}/{deployed.endpoint_name}/"
    session = deployed.session if deployed is not None and source.startswith("s3://") else None
    if baseline is None:
        found = served_model_baseline(deployed) or monitoring.find_default_baseline(settings.state_dir(state_dir))
        baseline = str(found) if found else None
        if baseline:
            click.echo(f"baseline: {baseline}", err=True)
    if wait_for_evaluation:
        wait_for_evaluation_capture(source, session, reports_dir(state_dir), wait_s)
    out_dir = Path(out) if out else reports_dir(state_dir) / "monitor"
    with tqdm(desc="capture files read", unit=" files", file=sys.stderr, leave=False) as bar:
        try:
            summary = monitoring.monitor(source, out_dir, baseline_path=baseline, threshold=threshold,
                                         alpha=monitoring.DEFAULT_ALPHA if alpha is None else alpha,
                                         session=session, progress=lambda _: bar.update(1), since=since)
        except (monitoring.CaptureSourceError, FileNotFoundError, ValueError) as error:
            raise click.ClickException(str(error)) from None
    for problem in summary["problems"]:
        click.echo(f"malformed capture line: {problem}", err=True)
    if as_json:
        click.echo(json.dumps(monitoring.public_summary(summary), indent=2))
    else:
        share = summary["share_below_threshold"]
        click.echo(f"{summary['records']} records in {summary['files']} files from {summary['source']}")
        click.echo(f"time range: {summary['time_range']['first']} .. {summary['time_range']['last']}")
        click.echo("class counts: " + ", ".join(f"{k}={v}" for k, v in summary["class_counts"].items()))
        click.echo(f"below threshold {summary['threshold']}: {summary['below_threshold']}"
                   + ("" if share is None else f" ({share:.1%})"))
        click.echo(monitoring.drift_caption(summary["drift"]))
        click.echo(f"saved {out_dir / monitoring.SUMMARY_FILE} and plots in {out_dir}")
    if fail_on_drift and summary["drift"]["status"] == "fail":
        sys.exit(3)


def run_scheduled_monitor(target: str, state_dir: str | None, as_json: bool, fail_on_drift: bool) -> None:
    """Invoke the deployed monitor function (deploy/monitoring.py) and print its run summary."""
    deployed = _target(target, state_dir)
    try:
        summary = deployed_monitor.run_now(deployed.session, deployed.record["prefix"])
    except deployed_monitor.DeployError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        share = summary["share_below_threshold"]
        click.echo(f"scheduled monitor run {summary['run_id']} at {summary['run_at']}: {summary['records']} new records "
                   f"in {summary['files']} files under {summary['capture']}")
        click.echo(f"below threshold {summary['threshold']}: {summary['below_threshold']}"
                   + ("" if share is None else f" ({share:.1%})"))
        click.echo(monitoring.drift_caption(summary["drift"]))
        click.echo("published to CloudWatch: " + ", ".join(f"{name}={value:.4g}" for name, value in summary["metrics"].items()))
    if fail_on_drift and summary["drift"]["status"] == "fail":
        sys.exit(3)


@click.command()
@target_option()
@click.option("--execution", "executions", multiple=True,
              help="Execution ARN to draw (repeatable; default: the latest passing and the latest failing).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="HTML file (default <state>/reports/report.html).")
@click.option("--coverage-json", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Draw the workflow coverage from this JSON (pytest --scones-coverage-json) instead of the stack's executions.")
@state_dir_option()
def report(target, executions, out, coverage_json, state_dir) -> None:
    """Write one self-contained HTML page: evaluation table, monitoring plots, the workflow graph and its coverage."""
    try:
        deployed = load_target(target, state_dir)
    except TargetNotFound as error:
        deployed = None
        click.echo(f"note: {error}; the page will have no workflow graph", err=True)
    out_path = Path(out) if out else reports_dir(state_dir) / "report.html"
    try:
        try:
            path = reporting.build_report(out_path, reports_dir(state_dir), target=deployed, execution_arns=list(executions),
                                          coverage_json=Path(coverage_json) if coverage_json else None)
        except EndpointConnectionError as error:
            if executions:
                raise click.ClickException(f"cannot reach the {target} stack to read the executions: {error}") from None
            click.echo(f"note: the {target} stack is not reachable ({error}); the page will have no workflow graph",
                       err=True)
            path = reporting.build_report(out_path, reports_dir(state_dir), target=None,
                                          coverage_json=Path(coverage_json) if coverage_json else None)
    except reporting.ReportError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"report written to {path}")
