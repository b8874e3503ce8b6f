"""The options several commands share, each declared once: its one name, its destination, its check.

A bad value is refused by click before any work, with an error that names the option
("Invalid value for '--threshold': 2.0 is not in the range 0<=x<=1.").
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable

import click

from scones import settings
from scones.deploy import local as local_target

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
TARGETS = ("local", "aws")
PORT = click.IntRange(1, 65535)
PROBABILITY = click.FloatRange(0.0, 1.0)


def state_dir_option(help: str = f"State folder (default ${settings.STATE_DIR}, state_dir in [tool.scones], "
                                 f"or {settings.DEFAULT_STATE_FOLDER}).") -> Decorator:
    return click.option("--state-dir", "state_dir", type=click.Path(file_okay=False), default=None, help=help)


def target_option(choices: tuple[str, ...] = TARGETS, help: str | None = None) -> Decorator:
    return click.option("--target", "target", type=click.Choice(list(choices)), default=choices[0],
                        show_default=True, help=help)


def json_option(help: str = "Print JSON instead of the table.") -> Decorator:
    return click.option("--json", "as_json", is_flag=True, help=help)


def threshold_option(default: float | None = local_target.DEFAULT_THRESHOLD,
                     help: str = "Confidence the filter step requires (a probability, 0 to 1).") -> Decorator:
    return click.option("--threshold", type=PROBABILITY, default=default, show_default=default is not None, help=help)


def port_option(name: str, help: str, default: int | None = None) -> Decorator:
    return click.option(name, type=PORT, default=default, show_default=default is not None, help=help)


def prefix_option(default: str = local_target.DEFAULT_PREFIX, aliases: tuple[str, ...] = ()) -> Decorator:
    """--prefix; `aliases` are older spellings a command still accepts so that scripts keep working."""
    also = f" ({', '.join(aliases)}: the same, an older spelling)" if aliases else ""
    return click.option("--prefix", *aliases, "prefix", default=default, show_default=True,
                        help=f"Prefix of every resource name (functions, state machine, roles){also}.")


def concurrency_option(default: int) -> Decorator:
    return click.option("--concurrency", "-c", type=click.IntRange(1, 64), default=default, show_default=True,
                        help="Executions in flight at once.")


def timeout_option(default: float, help: str) -> Decorator:
    return click.option("--timeout", type=click.FloatRange(0, min_open=True), default=default, show_default=True,
                        help=help)


@lru_cache(maxsize=1)
def endpoint_name_pattern() -> re.Pattern[str]:
    """SageMaker's rule for an endpoint name, from botocore's service model (shape EndpointName)."""
    from botocore.loaders import create_loader

    shape = create_loader().load_service_model("sagemaker", "service-2")["shapes"]["EndpointName"]
    return re.compile(shape["pattern"])


def check_endpoint_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not endpoint_name_pattern().fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not a SageMaker endpoint name: up to 63 letters, digits and hyphens, starting and "
            f"ending with a letter or digit (pattern {endpoint_name_pattern().pattern})", ctx=ctx, param=param)
    return value


def endpoint_name_option(default: str | None = local_target.DEFAULT_ENDPOINT_NAME,
                         help: str | None = None) -> Decorator:
    return click.option("--endpoint-name", default=default, show_default=default is not None, help=help,
                        callback=check_endpoint_name)
