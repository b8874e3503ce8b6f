"""Names shared by the manager (project venv) and the gateway handler (LocalStack's venv): no LocalStack imports."""
from scones import settings

MODE_ENV = settings.IAM_MODE                  # enforce (default) | report | off, read when LocalStack starts
MODES = ("enforce", "report", "off")
DEFAULT_MODE = "enforce"
HOOK = "install_iam_checks = scones.harness.iam.gateway:install_iam_checks"   # group localstack.hooks.on_infra_start
DENIALS_PATH = "/_scones/iam/denials"         # GET: what was denied (or would have been, in report mode)
