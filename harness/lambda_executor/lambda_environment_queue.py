"""Throughput patch for LocalStack 4.14.0 Lambda: at a function's cap, an invoke waits for one of its environments.

Why: 4.14.0's `AssignmentService.get_environment` reserves an idle environment of the function or, with
none idle at that instant, starts a new one. Here the number of environments is capped (environment_slots:
MAX_PER_FUNCTION), so at the cap the new environment's sandbox took the place of the function's least
recently used idle one, which had often come free a moment after the check: its sandbox was ended, and
the next invoke it got started it again with a cold start. At 32 concurrent executions
(benchmarks/execution_cpu.py --concurrency 32) that made 96 cold starts in 200 executions and 3.8
executions/s, against 24/s at 8 concurrent.

Here an on-demand invoke that finds no idle environment starts a new one only while the function has
fewer than MAX_PER_FUNCTION environments (those starting included); at the cap it waits for one of them
to come free and reserves it, as a request waits for a free instance behind a load balancer. What an invoke
gets is unchanged: an environment of its function, warm when one is. AWS would start another environment
(up to the account's concurrency, 1,000 by default); this machine's cores could not run more at once anyway.
An invoke that waited environment_slots.SLOT_WAIT_S for one fails, as a start that found no free place did.
Provisioned-concurrency environments are assigned as in 4.14.0.

Pinned: applied only to localstack-core 4.14.0, where get_environment was read; SCONES_LAMBDA_ENVIRONMENT_QUEUE=0
turns it off (e.g. to measure the difference). Its counts are in GET /_scones/executor.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter

from scones.harness.lambda_executor import pinned
from scones.harness.lambda_executor.environment_slots import MAX_PER_FUNCTION, SLOT_WAIT_S
from scones.settings import LAMBDA_ENVIRONMENT_QUEUE as ENVIRONMENT_QUEUE_ENV

LOG = logging.getLogger(__name__)

PER_FUNCTION = MAX_PER_FUNCTION
WAIT_S = SLOT_WAIT_S
WAKE_UP_S = 1.0   # a waiter looks again at least this often, whatever it was told


def _install() -> None:
    from localstack.services.lambda_.invocation import assignment
    from localstack.services.lambda_.invocation.execution_environment import InvalidStatusException
    from localstack.services.lambda_.invocation.lambda_models import InitializationType

    changed = threading.Condition()
    starting: Counter[str] = Counter()

    def reserve_idle(environments, provisioning_type):
        for environment in list(environments.values()):
            if environment.initialization_type != provisioning_type:
                continue
            try:
                environment.reserve()
                return environment
            except InvalidStatusException:
                pass
        return None

    def on_demand_environment(self, version_manager_id: str, function_version):
        """An idle environment of the function, a new one below the cap, or the first one to come free."""
        per_function, wait_s = PER_FUNCTION, WAIT_S
        deadline = time.monotonic() + wait_s
        waited = False
        with changed:
            while True:
                environments = self.environments[version_manager_id]
                if (environment := reserve_idle(environments, InitializationType.on_demand)) is not None:
                    if waited:
                        with PATCH.lock:
                            PATCH.state["waited"] += 1
                    return environment
                alive = sum(1 for environment in environments.values()
                            if environment.initialization_type == InitializationType.on_demand)
                if alive + starting[version_manager_id] < per_function:
                    starting[version_manager_id] += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    with PATCH.lock:
                        PATCH.state["timed_out"] += 1
                    raise assignment.AssignmentException(
                        f"all {per_function} execution environments of {function_version.qualified_arn} stayed busy "
                        f"for {wait_s:.0f} s")
                waited = True
                changed.wait(min(remaining, WAKE_UP_S))
        try:
            environment = self.start_environment(version_manager_id, function_version)
            self.environments[version_manager_id][environment.id] = environment
            environment.reserve()
            with PATCH.lock:
                PATCH.state["started"] += 1
            return environment
        finally:
            with changed:
                starting[version_manager_id] -= 1
                changed.notify_all()

    @contextlib.contextmanager
    def get_environment(self, version_manager_id, function_version, provisioning_type):
        if provisioning_type == InitializationType.on_demand:
            execution_environment = on_demand_environment(self, version_manager_id, function_version)
        else:   # as 4.14.0: an idle environment of that type, or the error it raises
            execution_environment = reserve_idle(self.environments[version_manager_id], provisioning_type)
            if execution_environment is None:
                if provisioning_type == InitializationType.provisioned_concurrency:
                    raise assignment.AssignmentException(
                        "No provisioned concurrency environment available despite lease.")
                raise ValueError(f"Invalid provisioning type {provisioning_type}")
        # as 4.14.0 from here: release after the invoke, stop the environment after a failed one
        try:
            yield execution_environment
            execution_environment.release()
        except InvalidStatusException as invalid_e:
            LOG.error("InvalidStatusException: %s", invalid_e)
        except Exception as e:
            LOG.error("Failed invocation <%s>: %s", type(e), e, exc_info=LOG.isEnabledFor(logging.DEBUG))
            self.stop_environment(execution_environment)
            raise e
        finally:
            with changed:
                changed.notify_all()

    original_stop = assignment.AssignmentService.stop_environment
    original_on_timeout = assignment.AssignmentService.on_timeout

    def stop_environment(self, environment) -> None:
        original_stop(self, environment)
        with changed:
            changed.notify_all()

    def on_timeout(self, version_manager_id: str, environment_id: str) -> None:
        original_on_timeout(self, version_manager_id, environment_id)
        with changed:
            changed.notify_all()

    assignment.AssignmentService.get_environment = get_environment
    assignment.AssignmentService.stop_environment = stop_environment
    assignment.AssignmentService.on_timeout = on_timeout


PATCH = pinned.Patch("Lambda environment queue (at a function's cap an invoke waits for one of its environments)",
                     ENVIRONMENT_QUEUE_ENV, _install, started=0, waited=0, timed_out=0)
apply = PATCH.apply


def status() -> dict:
    return PATCH.status()
