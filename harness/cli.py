"""The `scones` command line.

Subcommands are imported only when invoked, so `scones status` never pays for importing torch.
Each entry maps a command name to "module:attribute" of a click command.

The group is the CLI's one error boundary: an error no command handled itself becomes one line
that names what failed and what to do, with exit status 1; `scones --debug CMD` (or
SCONES_DEBUG=1) lets the traceback through instead.
"""
from __future__ import annotations

import importlib
import sys

import click

from scones import loopback, settings
from scones.errors import SconesError
from scones.lambdas.capture_records import MalformedRecord
from scones.lambdas.errors import WorkflowError
from scones.state_machine.render import DefinitionError

COMMANDS = {
    "stage": "scones.harness.commands.data:stage",
    "train": "scones.harness.commands.model:train",
    "serve": "scones.harness.commands.endpoint:serve",
    "up": "scones.harness.commands.local:up",
    "run": "scones.harness.commands.local:run",
    "status": "scones.harness.commands.local:status",
    "down": "scones.harness.commands.local:down",
    "deploy": "scones.harness.commands.aws:deploy",
    "destroy": "scones.harness.commands.aws:destroy",
    "evaluate": "scones.harness.commands.monitoring:evaluate",
    "monitor": "scones.harness.commands.monitoring:monitor",
    "report": "scones.harness.commands.monitoring:report",
    "results": "scones.harness.commands.results:results",
    "faults": "scones.harness.commands.faults:faults",
}
LOCAL_HINT = "is the local stack up? `scones status` shows which part is down; `scones up` starts or repairs it"
AWS_HINT = "check the network and the region; `scones deploy --target aws --dry-run` plans without reaching AWS"


# What scones raises on purpose: SconesError, and the bases of the layers that import nothing of scones.
OUR_ERRORS: tuple[type[Exception], ...] = (SconesError, WorkflowError, MalformedRecord, DefinitionError)
# The model code's base, looked up only once its module is loaded: importing it costs torch, and an
# InvalidImageError cannot exist before its module is.
MODEL_ERRORS = ("scones.local_model.network", "InvalidImageError")


def is_ours(error: BaseException) -> bool:
    """An error scones raised on purpose, whose message already says what is wrong and what to do."""
    module = sys.modules.get(MODEL_ERRORS[0])
    model_error = getattr(module, MODEL_ERRORS[1], None) if module is not None else None
    return isinstance(error, OUR_ERRORS) or (model_error is not None and isinstance(error, model_error))


def describe(error: Exception) -> str:
    """One line for an error no command handled: what failed, and what to do about it."""
    if is_ours(error):
        return str(error)
    from botocore import exceptions as boto

    if isinstance(error, boto.BotoCoreError | boto.ClientError):
        return _describe_aws(error, boto)
    if isinstance(error, OSError) and error.filename:
        return f"{error.strerror or error}: {error.filename}"
    return f"unexpected {type(error).__name__}: {error} (`scones --debug ...` shows the traceback)"


def _describe_aws(error, boto) -> str:
    from scones.deploy.aws import UNREACHABLE_ERRORS
    from scones.deploy.endpoint_guard import is_local_endpoint

    if isinstance(error, boto.ProxyConnectionError):
        return (f"AWS cannot be reached: the proxy {error.kwargs.get('proxy_url')} refused the connection "
                f"(ProxyConnectionError): check HTTPS_PROXY / HTTP_PROXY / NO_PROXY; {AWS_HINT}")
    if isinstance(error, UNREACHABLE_ERRORS):
        url = error.kwargs.get("endpoint_url") or ""
        what = f"could not reach {url} ({type(error).__name__})" if url else f"{type(error).__name__}: {error}"
        if url and is_local_endpoint(url):
            return f"{what}: {LOCAL_HINT}"
        return f"AWS cannot be reached: {what}: {AWS_HINT}"
    if isinstance(error, boto.NoCredentialsError | boto.PartialCredentialsError):
        return (f"{error}: set AWS_PROFILE (or --profile) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "or run `aws configure` / `aws sso login`")
    if isinstance(error, boto.NoRegionError):
        return f"{error}: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION"
    if isinstance(error, boto.ClientError):
        details = error.response.get("Error", {})
        return f"{error.operation_name} failed: {details.get('Code', 'error')}: {details.get('Message', error)}"
    return f"{type(error).__name__}: {error}"


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise   # click reports these itself (a closed pipe, as in `scones status | head`, quietly)
        except Exception as error:
            if ctx.params.get("debug") or settings.debug():
                raise
            raise click.ClickException(f"scones {ctx.invoked_subcommand} failed: {describe(error)}") from error


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help=f"Show the traceback of an unexpected error (or set {settings.DEBUG}=1).")
def main(debug: bool) -> None:
    """Scones: develop, test and ship the bicycle/motorcycle SageMaker workflow locally, then on AWS."""
    loopback.exempt_loopback()   # our own servers are on this machine: no proxy in the environment may carry them
