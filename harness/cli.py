"""The `scones` command line.

Subcommands are imported only when invoked, so `scones status` never pays for importing torch.
Each entry maps a command name to "module:attribute" of a click command.
"""
from __future__ import annotations

import importlib

import click

COMMANDS = {
    "stage": "harness.commands.data:stage",
    "train": "harness.commands.model:train",
    "serve": "harness.commands.endpoint:serve",
    "up": "harness.commands.local:up",
    "run": "harness.commands.local:run",
    "status": "harness.commands.local:status",
    "down": "harness.commands.local:down",
    "deploy": "harness.commands.aws:deploy",
    "destroy": "harness.commands.aws:destroy",
    "evaluate": "harness.commands.monitoring:evaluate",
    "monitor": "harness.commands.monitoring:monitor",
    "report": "harness.commands.monitoring:report",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Scones: develop, test and ship the bicycle/motorcycle SageMaker workflow locally, then on AWS."""
