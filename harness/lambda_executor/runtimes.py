"""Which Python runtime identifiers AWS Lambda accepts today, and which interpreter runs each one here.

No LocalStack imports: the manager (harness/localstack.py) builds one venv per runtime from this
table, the executor inside LocalStack runs each function on its own runtime's interpreter, and
LocalStack's create/update calls refuse the identifiers AWS no longer accepts.

Source: AWS Lambda runtimes, https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html
(supported: python3.14 ... python3.10; python3.9 deprecated 2025-12-15, blocked for create from
2027-02-01 and for update from 2027-03-03; python3.8 deprecated 2024-10-14 and blocked for create
and update since early 2026; python3.7 and older long blocked). Checked 2026-12-02.
"""
from __future__ import annotations

import json
import os

from scones.errors import SconesError
from scones.harness.lambda_executor.names import PYTHONS_ENV

# runtime identifier -> the CPython version it runs (what AWS's image for it ships)
PYTHON_RUNTIMES = {
    "python3.9": "3.9",
    "python3.10": "3.10",
    "python3.11": "3.11",
    "python3.12": "3.12",
    "python3.13": "3.13",
    "python3.14": "3.14",
}
# AWS answers create/update with these with InvalidParameterValueException.
BLOCKED_RUNTIMES = ("python2.7", "python3.6", "python3.7", "python3.8")


def blocked_message(runtime: str) -> str:
    """AWS's own wording (also LocalStack's, localstack/services/lambda_/provider.py)."""
    return (f"The runtime parameter of {runtime} is no longer supported for creating or updating AWS Lambda "
            "functions. We recommend you use a supported runtime while creating or updating functions.")


class MissingInterpreter(SconesError, RuntimeError):
    pass


def interpreter_for(runtime: str | None) -> str:
    """The runtime venv's python for `runtime`; never another version's."""
    if runtime not in PYTHON_RUNTIMES:
        raise MissingInterpreter(
            f"Runtime {runtime!r} is not run by the scones process executor: only zip functions on "
            f"{', '.join(PYTHON_RUNTIMES)} run here.")
    pythons = json.loads(os.environ.get(PYTHONS_ENV) or "{}")
    interpreter = pythons.get(runtime)
    if interpreter and os.access(interpreter, os.X_OK):
        return interpreter
    version = PYTHON_RUNTIMES[runtime]
    raise MissingInterpreter(
        f"No Python {version} interpreter for runtime {runtime} on this machine: scones looked for "
        f"python{version} on PATH, in pyenv (~/.pyenv/versions/{version}.*) and in uv's folder "
        f"(~/.local/share/uv/python/cpython-{version}.*). Install one (e.g. `pyenv install {version}` or "
        f"`uv python install {version}`) and run `scones up` again; the function will not run on another "
        "Python version.")
