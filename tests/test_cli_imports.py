"""harness/cli.py imports a subcommand only when it is invoked, so that a command pays only for what it
uses: no command module imports torch (seconds of a CLI call) before its command needs it. `scones monitor`
imported it through `scones evaluate`'s generated out-of-distribution images, and each of the durability
tests' monitor runs spent most of its 6-10 s importing torch and torchvision."""
from __future__ import annotations

import subprocess
import sys

import pytest

from scones.harness.cli import COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_loading_a_command_imports_no_torch(command):
    module, attribute = COMMANDS[command].split(":")
    probe = (f"import sys; from {module} import {attribute}; "
             "print(sorted(name for name in ('torch', 'torchvision') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
