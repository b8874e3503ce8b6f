"""Names shared by the manager (project venv) and the executor (LocalStack's venv): no imports of LocalStack."""
from scones import settings

LOCALSTACK_VERSION = "4.14.0"                        # the localstack-core we install and our patches were read in
PLUGIN_NAME = "scones-process"                       # LAMBDA_RUNTIME_EXECUTOR=<this>
ENTRY_POINT_GROUP = "localstack.lambda.runtime_executor"
ENTRY_POINT = f"{PLUGIN_NAME} = scones.harness.lambda_executor.plugin:ProcessRuntimeExecutorPlugin"
# Run by LocalStack at its start: SageMaker runtime calls on its gateway reach our endpoint servers.
HOOK_GROUP = "localstack.hooks.on_infra_start"
SAGEMAKER_RUNTIME_HOOK = "install_sagemaker_runtime = scones.harness.lambda_executor.sagemaker_runtime:install_sagemaker_runtime"
# On LocalStack's gateway: PUT <this>/<endpoint name> {"url": "http://HOST:PORT"}; GET <this> lists them.
SAGEMAKER_ENDPOINTS_PATH = "/_scones/sagemaker-endpoints"

# Environment of the LocalStack process, read by the executor; the variables are settings (scones/settings.py).
PYTHONS_ENV = settings.LAMBDA_PYTHONS
CLIENT_CACHE_ENV = settings.SFN_CLIENT_CACHE
DEFINITION_CACHE_ENV = settings.SFN_DEFINITION_CACHE
THREADS_PATCH_ENV = settings.LAMBDA_THREADS_PATCH
EVENTS_SFN_TARGET_ENV = settings.EVENTS_SFN_TARGET_PATCH

# Fault rules and the Step Functions time scale (harness/faults.py, faults_gateway.py, sfn_time_scale.py).
FAULTS_HOOK = "install_faults = scones.harness.lambda_executor.faults_gateway:install_faults"
FAULTS_PATH = "/_scones/faults"                      # GET lists, POST adds, DELETE clears (or /<id> removes one)
TIME_SCALE_PATH = "/_scones/time-scale"              # GET; PUT {"scale": 0.01}
THREADS_PATH = "/_scones/threads"                    # GET {native thread id: name} of LocalStack's threads
FAULTS_PATCH_ENV = settings.FAULTS_PATCH
TIME_SCALE_PATCH_ENV = settings.SFN_TIME_SCALE_PATCH
TIME_SCALE_ENV = settings.TIME_SCALE

# LocalStack's process ends without the interpreter's last garbage collections (quick_exit.py).
QUICK_EXIT_HOOK = "install_quick_exit = scones.harness.lambda_executor.quick_exit:install_quick_exit"
QUICK_EXIT_ENV = settings.LOCALSTACK_QUICK_EXIT
