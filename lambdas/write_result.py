"""writeResult: put a finished run's result where a dispatcher reads it, s3://<RESULTS_BUCKET>/<RESULTS_PREFIX><photo key>.json.

Invoked by the EventBridge rule on the workflow's "Step Functions Execution Status Change"
events. Success and failure alike become one RunResult (lambdas/run_results.py); a redelivered
event writes the same object again.
"""
from __future__ import annotations

import logging

from . import clients, config
from .run_results import ExecutionFinished, RunResult, result_key

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


def lambda_handler(event, context):
    run = ExecutionFinished.from_event(event)
    if not run.finished:
        logger.info("execution %s is %s: no result yet", run.execution_arn, run.status)
        return {"written": None}
    if run.needs_payloads:
        # The event leaves out input/output that would pass EventBridge's size limit; the execution still has them.
        described = clients.stepfunctions().describe_execution(executionArn=run.execution_arn)
        run = run.with_payloads(described.get("input"), described.get("output"))
    result = RunResult.from_execution(run)
    bucket, key = config.results_bucket(), result_key(config.results_prefix(), result.s3_key)
    clients.s3().put_object(Bucket=bucket, Key=key, Body=result.to_json().encode(), ContentType="application/json")
    logger.info("s3://%s/%s: %s %s", bucket, key, result.status, result.predicted_class or result.error)
    return {"written": f"s3://{bucket}/{key}"}
