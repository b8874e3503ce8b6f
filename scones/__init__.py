"""Scones: local-first emulation, test harness and one-command AWS deploy of the Scones Unlimited workflow.

The subpackages are the checkout's top-level folders (harness, lambdas, state_machine,
local_model, deploy), mapped into this package by pyproject.toml's package-dir. An installed
scones holds them inside this folder; a bare checkout on sys.path (LocalStack's venv, the compose
images) finds them beside it.
"""
from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "harness" / "__init__.py").is_file() and not (Path(__path__[0]) / "harness").is_dir():
    __path__.append(str(_checkout))
