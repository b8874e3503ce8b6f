"""The one base of every error scones raises on purpose.

Such an error's message already says what is wrong, where, and what to do, so the CLI's error
boundary and the pytest plugin show it as it is: one line, no traceback, never "unexpected".
The layers that import nothing of scones (lambdas/, local_model/, state_machine/: they ship
alone in a Lambda zip or a SageMaker source directory) keep their own bases, which
`scones.harness.cli.OUR_ERRORS` names beside this one.
"""
from __future__ import annotations


class SconesError(Exception):
    """An error scones raised on purpose; its message is meant for the user as it is."""
