"""The docker-compose stack: its files checked statically, its deploy step (the local target's plan) against a moto server,
and (opt-in, SCONES_TEST_COMPOSE=1, needs dockerd and the images) the real stack end to end.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from scones.deploy import local as local_target
from scones.harness import localstack as localstack_manager
from scones.harness.endpoint import free_port
from support import COMPOSE_TEST, poll

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCRIPTS = sorted((ROOT / "harness" / "compose").glob("*.sh"))
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
SERVICES = {"localstack", "train", "endpoint", "deploy"}
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def defaults() -> dict[str, set[str]]:
    """Every ${NAME:-default} in the compose file: NAME -> the defaults it is given."""
    found: dict[str, set[str]] = {}
    for name, value in DEFAULT.findall(COMPOSE_FILE.read_text()):
        found.setdefault(name, set()).add(value)
    return found


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


# --------------------------------------------------------------------------- static checks

def test_compose_file_has_the_four_services_all_on_loopback():
    services = compose()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        # Host networking and no published port: the servers bind 127.0.0.1 themselves.
        assert service.get("network_mode") == "host", f"{name} must use the host's network"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        assert "privileged" not in service and "cap_add" not in service, f"{name} asks for privileges"


def test_services_run_the_projects_own_commands():
    services = compose()["services"]
    endpoint = command_text(services["endpoint"])
    assert "exec scones serve --model=/opt/ml/model" in endpoint
    assert "tar -xzf /model/model.tar.gz -C /opt/ml/model" in endpoint
    assert "--host=127.0.0.1" in endpoint
    assert "--capture=s3://" in endpoint
    assert "scones train --data /data --out /model" in command_text(services["train"])
    assert command_text(services["deploy"]) == "python -m scones.harness.compose.deploy"
    assert command_text(services["localstack"]).endswith("-m scones.harness.compose.localstack_main")
    for module in ("scones.harness.compose.deploy", "scones.harness.compose.localstack_main"):
        assert importlib.util.find_spec(module) is not None, module


def test_start_order_waits_for_health_and_training():
    services = compose()["services"]
    assert services["endpoint"]["depends_on"] == {"train": {"condition": "service_completed_successfully"}}
    assert services["deploy"]["depends_on"] == {"localstack": {"condition": "service_healthy"},
                                                "endpoint": {"condition": "service_healthy"}}
    for name in ("localstack", "endpoint"):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "http://127.0.0.1:" in probe, f"{name}'s health check must probe loopback"


def test_defaults_match_the_local_target():
    found = defaults()
    expected = {
        "SCONES_LOCALSTACK_PORT": str(local_target.DEFAULT_LOCALSTACK_PORT),
        "SCONES_ENDPOINT_PORT": str(local_target.DEFAULT_ENDPOINT_PORT),
        "SCONES_BUCKET": local_target.DEFAULT_BUCKET,
        "SCONES_PREFIX": local_target.DEFAULT_PREFIX,
        "SCONES_ENDPOINT_NAME": local_target.DEFAULT_ENDPOINT_NAME,
        "SCONES_THRESHOLD": str(local_target.DEFAULT_THRESHOLD),
    }
    for name, value in expected.items():
        assert found.get(name) == {value}, f"${{{name}}} defaults to {found.get(name)}, the local target to {value}"
    capture = re.search(r"--capture=(\S+)", command_text(compose()["services"]["endpoint"])).group(1)
    assert capture.endswith("/" + local_target.CAPTURE_PREFIX)


def test_one_image_serves_train_endpoint_and_deploy_and_is_built_once():
    services = compose()["services"]
    assert {services[name]["image"] for name in ("train", "endpoint", "deploy")} == {"scones/app:latest"}
    built = [name for name, service in services.items() if "build" in service]
    assert sorted(built) == ["localstack", "train"]
    for name in built:
        build = services[name]["build"]
        assert build["network"] == "none", "image builds must not need a network"
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfiles_build_offline_from_our_base_and_copy_what_exists(dockerfile):
    lines = dockerfile.read_text().splitlines()
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert froms and all(image.startswith("scones/base:") for image in froms)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY "):
            sources = line.split()[1:-1]
            for source in sources:
                if source.startswith("docker/wheels/"):
                    continue  # fetched by harness/compose/fetch-wheels.sh, never committed
                assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
                top = source.split("/")[0]
                assert f"!{top}" in ignored or f"!{top}/" in ignored, f".dockerignore keeps {top} out"
    text = dockerfile.read_text()
    assert "PIP_NO_INDEX=1" in text, "pip in the image must not look for an index"


def test_dockerignore_keeps_the_context_small():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[[line.strip() for line in lines].index("*")] == "*", "everything is excluded unless listed"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert not kept & {".venv", ".scones", ".git", "tests", "test-artifacts"}
    assert "**/*.png" in lines


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_shell_scripts_parse_and_are_executable(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_tool_accepts_the_file_when_installed():
    if shutil.which("docker-compose"):
        command = ["docker-compose"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    else:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    result = subprocess.run([*command, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "SCONES_LOCALSTACK_PORT": "4999"})
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- entry points


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def moto_as_localstack(tmp_path, monkeypatch):
    """A moto server standing in for LocalStack, in LocalStack's account (the deploy makes the roles itself)."""
    port = free_port()
    env = {**os.environ, "MOTO_ACCOUNT_ID": local_target.ACCOUNT_ID}
    log = open(tmp_path / "moto.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        poll(lambda: _answers(f"http://127.0.0.1:{port}/moto-api/"), 30, interval=0.1, what="the moto server")
        session = local_target.local_session(local_target.localstack_url(port))
        yield port, session
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture
def staged(tmp_path):
    data = tmp_path / "data"
    for part in ("train", "test"):
        for label in ("bicycle", "motorcycle"):
            (data / part / label).mkdir(parents=True)
            (data / part / label / f"{label}_0.png").write_bytes(f"{part}-{label}".encode())
        (data / f"{part}.lst").write_text(f"1\t0\t{part}/bicycle/bicycle_0.png\n")
    return data


def test_deploy_service_deploys_and_writes_a_record_the_host_can_load(moto_as_localstack, staged, tmp_path,
                                                                     monkeypatch):
    from scones.deploy.record import MANAGED_BY_COMPOSE as MANAGED_BY
    from scones.harness.compose.deploy import deploy_into_stack
    from scones.harness.targets import load_target

    port, session = moto_as_localstack
    # moto has no route to register endpoints at (LocalStack's is tested in test_sagemaker_runtime_gateway.py).
    registered = []
    monkeypatch.setattr(localstack_manager, "register_endpoint", lambda *arguments: registered.append(arguments))
    state = tmp_path / "state"
    messages: list[str] = []
    record = deploy_into_stack(state_dir=state, data_dir=staged, localstack_port=port, endpoint_port=18080,
                               bucket="scones-compose-test", prefix="composetest", endpoint_name="scones-classifier",
                               threshold=0.93, host_model_dir="/host/model", progress=messages.append)
    assert record["managed_by"] == MANAGED_BY
    assert record["endpoint"]["model_dir"] == "/host/model" and record["data_dir"] == str(staged)
    assert record["localstack"]["pid"] is None and record["endpoint"]["pid"] is None
    assert record["dataset"] == {"uploaded": 4, "skipped": 0, "parts": ["test"]}   # as `scones up`: test/ and the .lst files

    target = load_target("local", state)
    assert set(target.function_arns) == {"serializeImageData", "classifyImage", "filterInferences"}
    assert target.function_arns["classifyImage"].endswith(":function:composetest-classifyImage")
    assert target.state_machine_arn.endswith(":stateMachine:composetest-workflow")
    assert target.capture_s3_uri == "s3://scones-compose-test/data_capture"
    assert target.session.endpoint_url_for("sagemaker-runtime") == "http://127.0.0.1:18080"
    assert registered == [(local_target.localstack_url(port), "scones-classifier", "http://127.0.0.1:18080")]
    configuration = session.client("lambda").get_function_configuration(FunctionName="composetest-classifyImage")
    assert configuration["Environment"]["Variables"] == {"ENDPOINT_NAME": "scones-classifier"}
    keys = {item["Key"] for item in session.client("s3").list_objects_v2(Bucket="scones-compose-test")["Contents"]}
    assert "test/bicycle/bicycle_0.png" in keys and "train.lst" in keys
    # the same plan as `scones up`: event-driven runs, the drift monitor and its alarms too
    rules = sorted(rule["Name"] for rule in session.client("events").list_rules(NamePrefix="composetest-")["Rules"])
    assert rules == ["composetest-monitor-schedule", "composetest-photo-landed", "composetest-run-finished"]
    alarms = sorted(a["AlarmName"] for a in session.client("cloudwatch").describe_alarms()["MetricAlarms"])
    assert alarms == ["composetest-below-threshold", "composetest-drift"]
    assert record["monitor"]["topic_arn"].endswith(":composetest-monitor-alarms")
    assert record["outputs"]["intake_s3_uri"] == "s3://scones-compose-test/incoming/"
    assert record["event_runs"]["writer_function_arn"].endswith(":function:composetest-writeResult")

    again = deploy_into_stack(state_dir=state, data_dir=staged, localstack_port=port, endpoint_port=18080,
                              bucket="scones-compose-test", prefix="composetest", endpoint_name="scones-classifier",
                              threshold=0.93, progress=messages.append)
    assert again["outputs"] == record["outputs"] and again["dataset"] == {"uploaded": 0, "skipped": 4, "parts": ["test"]}


def test_deploy_service_exits_non_zero_with_one_clear_line(tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "SCONES_LOCALSTACK_PORT": str(port), "SCONES_STATE_DIR": str(tmp_path),
           "SCONES_DATA_DIR": str(tmp_path), "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_MAX_ATTEMPTS": "1"}
    result = subprocess.run([sys.executable, "-m", "scones.harness.compose.deploy"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("compose deploy failed: ")
    assert not (tmp_path / "local" / "stack.json").exists()


# --------------------------------------------------------------------------- the real stack

@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get(COMPOSE_TEST) != "1",
                    reason=f"builds and runs the docker-compose stack: set {COMPOSE_TEST}=1 (needs root and dockerd)")
def test_compose_stack_runs_the_workflow(tmp_path):
    """stack.sh up on spare ports, one good and one low-confidence execution from the host, stack.sh down."""
    from scones.harness.executions import run_executions
    from scones.harness.targets import load_target

    ls_port, ep_port = free_port(), free_port()
    model_dir = os.environ.get("SCONES_COMPOSE_MODEL_DIR") or str(tmp_path / "model")
    env = {**os.environ, "SCONES_LOCALSTACK_PORT": str(ls_port), "SCONES_ENDPOINT_PORT": str(ep_port),
           "SCONES_COMPOSE_STATE_DIR": str(tmp_path / "state"), "SCONES_COMPOSE_MODEL_DIR": model_dir,
           "COMPOSE_PROJECT_NAME": f"sconestest{ls_port}",
           # A short training run when the test trains its own model: this checks wiring, not accuracy.
           "SCONES_TRAIN_ARGS": os.environ.get("SCONES_TRAIN_ARGS", "--epochs 2")}
    stack = str(ROOT / "harness" / "compose" / "stack.sh")
    try:
        subprocess.run([stack, "up"], env=env, check=True, timeout=3600)
        target = load_target("local", tmp_path / "state")
        keys = sorted(p.name for p in (Path(os.environ.get("SCONES_DATA_DIR") or ROOT.parent / "shared" / "data")
                                       / "test" / "bicycle").glob("*.png"))[:2]
        results = run_executions(target, [f"test/bicycle/{key}" for key in keys], concurrency=1)
        assert all(result.status in ("SUCCEEDED", "FAILED") for result in results)
        for result in results:
            if result.status == "FAILED":
                assert result.error == "ThresholdConfidenceNotMet", result
            else:
                assert result.predicted_class in ("bicycle", "motorcycle")
        poll(lambda: target.client("s3").list_objects_v2(Bucket=target.bucket, Prefix="data_capture/")["KeyCount"], 30,
             interval=0.5, what="the endpoint container's data capture")
    finally:
        subprocess.run([stack, "down"], env=env, timeout=300)
