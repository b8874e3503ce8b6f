"""The plux plugin LocalStack finds under `localstack.lambda.runtime_executor` (name in names.PLUGIN_NAME)."""
from __future__ import annotations

from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin

from scones.harness.lambda_executor.names import PLUGIN_NAME


class ProcessRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = PLUGIN_NAME

    def load(self, *args, **kwargs):
        from scones.harness.lambda_executor import (
            events_sfn_target,
            gateway_buffered_responses,
            gateway_keep_alive,
            gateway_route_cache,
            internal_client_requests,
            lambda_environment_queue,
            lambda_logs_batch,
            lambda_metrics_batch,
            lambda_threads,
            runtime_validation,
            sfn_client_cache,
        )
        from scones.harness.lambda_executor.executor import ProcessRuntimeExecutor

        reclaim_idle_environments()
        runtime_validation.apply()
        lambda_threads.apply()  # before the first invoke; its modules are loaded by now, so it is quick
        lambda_metrics_batch.apply()
        lambda_logs_batch.apply()  # before the first function's log thread starts
        lambda_environment_queue.apply()  # before the first invoke asks for an environment
        gateway_keep_alive.apply()
        gateway_buffered_responses.apply()
        gateway_route_cache.apply()
        internal_client_requests.apply()  # before Step Functions and EventBridge make their Lambda clients
        sfn_client_cache.apply_in_background()
        events_sfn_target.apply_in_background()
        return ProcessRuntimeExecutor


KEEPALIVE_ENV = "LAMBDA_KEEPALIVE_MS"   # LocalStack's own setting: how long an idle environment lives


def reclaim_idle_environments() -> None:
    """LocalStack stops an environment LAMBDA_KEEPALIVE_MS after its last invoke (4.14.0 default: 10 min,
    read at each release). Ours is executor.IDLE_RECLAIM_MS, unless the user set LocalStack's variable."""
    import os

    from localstack import config

    from scones.harness.lambda_executor.executor import IDLE_RECLAIM_MS

    if not os.environ.get(KEEPALIVE_ENV):
        config.LAMBDA_KEEPALIVE_MS = IDLE_RECLAIM_MS
