"""The compose `localstack` service: LocalStack in the foreground, configured by harness/localstack.py.

`scones up` starts LocalStack in the background with LocalStack.start(); a container wants it
as its main process instead, so this takes the very same environment (loopback gateway on
$SCONES_LOCALSTACK_PORT, hypercorn, our process Lambda executor, state under the state dir)
and execs LocalStack with it.
"""
from __future__ import annotations

import os
import sys

from scones import settings
from scones.harness.lambda_executor.names import PYTHONS_ENV
from scones.harness.localstack import DEFAULT_PORT, MARKER, LocalStack


def main() -> None:
    port = int(os.environ.get(settings.LOCALSTACK_PORT) or DEFAULT_PORT)
    localstack = LocalStack(os.environ.get(settings.STATE_DIR), port)
    if not (localstack.python.exists() and (localstack.venv_dir / MARKER).exists()):
        sys.exit(f"LocalStack's venv is missing at {localstack.venv_dir}: the image build should have made it "
                 "(docker/Dockerfile.localstack); rebuild the image")
    # The image's Debian 13 has only Python 3.13: functions on other python3.x runtimes fail to
    # create there, naming the missing interpreter (never run on another version).
    environment = localstack.environment()
    os.chdir(localstack.home)
    print(f"localstack: exec {localstack.python} -m localstack.runtime.main on {localstack.url} "
          f"(Lambda runtimes {environment[PYTHONS_ENV]})", flush=True)
    os.execve(str(localstack.python), [str(localstack.python), "-m", "localstack.runtime.main"], environment)


if __name__ == "__main__":
    main()
