"""Serving under AWS's own SageMaker PyTorch inference toolkit against `scones serve`.

The toolkit is the code inside the PyTorch 2.5.1 py311 inference images (sagemaker-pytorch-inference
2.0.25 under TorchServe 0.12.0, from tests/parity/toolkit-requirements.txt), started by
scones.harness.toolkit_endpoint.ToolkitEndpoint as the image's entry point starts it; `scones serve` runs
as the local stack runs it (a subprocess of `python -m scones.harness.commands.endpoint`). Both serve the
same model.tar.gz the project builds, both are asked the same thing over HTTP, and the answers are
compared: status, Content-Type and body (error bodies by their message line: the traceback under
it names each side's own files).

What the toolkit does, from its sources (sagemaker_inference/transformer.py, utils.py,
sagemaker_pytorch_serving_container/default_pytorch_inference_handler.py, torchserve.py, and
TorchServe's ts/protocol/otf_message_handler.py): one predict_fn call per request; Content-Type as
sent, None when absent; JSON/CSV bodies decoded as UTF-8 before input_fn; every failure a 500 with
"<message>\\n<traceback>" and no Content-Type; /ping {"status": "Healthy"}; the user module named
by SAGEMAKER_PROGRAM.
"""
from __future__ import annotations

import http.client
import io
import json
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scones import settings, testing
from scones.deploy import sagemaker as sm
from scones.harness import models
from scones.harness.endpoint import EndpointServer
from scones.harness.toolkit_endpoint import ToolkitEndpoint

pytestmark = pytest.mark.parity

ENDPOINT = "parity-endpoint"
PER_CLASS = 20


def post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """POST exactly these headers (urllib would add a form Content-Type to a body without one)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers={"Content-Length": str(len(body)), **headers})
        reply = connection.getresponse()
        return reply.status, {name.lower(): value for name, value in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def get(url: str, path: str) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, {name.lower(): value for name, value in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def read_test_images() -> list[Path]:
    images = [path for label in ("bicycle", "motorcycle")
              for path in sorted((settings.data_dir() / "test" / label).glob("*.png"))[:PER_CLASS]]
    assert len(images) == 2 * PER_CLASS, f"expected {PER_CLASS} test images per class under {settings.data_dir()}"
    return images


def message_line(body: bytes) -> str:
    """An error body's message (its first line), with object addresses (0x7f...) masked."""
    return re.sub(r"0x[0-9a-f]+", "0x?", body.decode("utf-8", errors="replace").split("\n", 1)[0])


class Pair:
    """The same model served by the toolkit and by scones serve."""

    def __init__(self, toolkit: ToolkitEndpoint, scones: EndpointServer):
        self.toolkit, self.scones = toolkit, scones

    def both(self, path: str, body: bytes, headers: dict[str, str]):
        return post(self.toolkit.url, path, body, headers), post(self.scones.url, path, body, headers)


def serve_both(toolkit_python: str, model: Path, work_dir: Path, env: dict[str, str] | None = None):
    """Start scones serve (in the background) and the toolkit on one model; stop both afterwards."""
    scones = EndpointServer(model, endpoint_name=ENDPOINT, mode="subprocess", env=dict(env or {}),
                            log_path=work_dir / "scones-serve.log")
    toolkit = ToolkitEndpoint(python=toolkit_python, model=model, work_dir=work_dir / "toolkit", env=dict(env or {}))
    scones.start(wait=False)
    try:
        with toolkit:
            scones.wait_ready(timeout_s=120)
            yield Pair(toolkit, scones)
    finally:
        scones.stop()


def archive_with_code(source: Path, out: Path, files: dict[str, bytes], drop_code: bool = False) -> Path:
    """A copy of model.tar.gz with code/ files replaced or added (or code/ removed)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "model.tar.gz"
    with tarfile.open(source / "model.tar.gz") as original, tarfile.open(target, "w:gz") as archive:
        for member in original.getmembers():
            if member.name.lstrip("./").startswith("code") and (drop_code or member.name.lstrip("./") in files):
                continue
            archive.addfile(member, original.extractfile(member) if member.isfile() else None)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return target


def deployed_environment() -> dict[str, str]:
    """The Environment `scones deploy --target aws` gives the SageMaker model."""
    request = sm.model_request(prefix="parity", image="image", model_data="s3://bucket/model.tar.gz",
                               role_arn="arn:aws:iam::000000000000:role/parity")
    return request["PrimaryContainer"]["Environment"]


# Which SAGEMAKER_* names the serving toolkit reads: a constant of parameters.py/ts_parameters.py that
# some other module of the toolkit uses.
READ_BY_THE_TOOLKIT = """
import json, pathlib, re
import sagemaker_inference, sagemaker_pytorch_serving_container
from sagemaker_inference import parameters
from sagemaker_pytorch_serving_container import ts_parameters
sources = {path: path.read_text() for package in (sagemaker_inference, sagemaker_pytorch_serving_container)
           for path in pathlib.Path(package.__file__).parent.glob("*.py")}
read = sorted(value for module in (parameters, ts_parameters) for name, value in vars(module).items()
              if name.isupper() and any(re.search(r"parameters\\." + name + r"\\b", text) for text in sources.values()))
print(json.dumps(read))
"""


def test_the_deployed_model_environment_holds_only_what_the_toolkit_reads(run_in_toolkit_venv):
    read = set(json.loads(run_in_toolkit_venv(READ_BY_THE_TOOLKIT)))
    assert {"SAGEMAKER_PROGRAM", "SAGEMAKER_MODEL_SERVER_WORKERS", "SAGEMAKER_TS_BATCH_SIZE"} <= read
    assert "SAGEMAKER_CONTAINER_LOG_LEVEL" not in read  # defined in parameters.py, used nowhere
    assert set(deployed_environment()) <= read


# --- the project's model --------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["tiny", pytest.param("default", marks=pytest.mark.slow)])
def pair(request, toolkit_python, tmp_path_factory):
    """The tiny model (seconds to train) and the default one `scones train` builds (cached, trained on first use;
    $SCONES_MODEL_DIR names another, as for the local stack)."""
    if request.param == "tiny":
        model = testing.ensure_tiny_model()
    else:
        model = settings.model_dir() or models.ensure_model()
    yield from serve_both(toolkit_python, Path(model), tmp_path_factory.mktemp(f"serve-{request.param}"),
                          deployed_environment())


@pytest.mark.parametrize("content_type", ["image/png", "application/x-image"])
def test_probabilities_equal_the_toolkits_on_the_test_images(pair, content_type, same_torch):
    """Same bytes when the toolkit runs the project's torch: the same handlers on the same torch, one image per
    predict_fn call. Under another torch (`make parity-torch25`: the image's 2.5.1) the kernels differ, so float32
    sums run in another order: a few 1e-6 relative on the logits, less on the probabilities (softmax's slope is at
    most 1/4); 1e-4 absolute allows that and still catches any difference in decoding, preprocessing or weights,
    which moves probabilities by 1e-2 or more."""
    answers = set()
    for image in read_test_images():
        body = image.read_bytes()
        (status, headers, toolkit_body), (our_status, our_headers, our_body) = pair.both(
            "/invocations", body, {"Content-Type": content_type})
        assert (status, headers.get("content-type")) == (200, "application/json"), toolkit_body[:300]
        assert (our_status, our_headers.get("content-type")) == (200, "application/json"), our_body[:300]
        if same_torch:
            assert our_body == toolkit_body, image.name
        else:
            assert json.loads(our_body) == pytest.approx(json.loads(toolkit_body), abs=1e-4), image.name
        answers.add(our_body)
    assert len(answers) > 1  # distinct answers: a mix-up between images would show


PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case, body, headers", [
    ("bad image bytes", b"these are not image bytes", {"Content-Type": "image/png"}),
    ("truncated png", PNG + b"\0\0\0\rIHDR", {"Content-Type": "image/png"}),
    ("wrong content type", "image", {"Content-Type": "text/plain"}),
    ("png as application/json", "image", {"Content-Type": "application/json"}),
    ("png as text/csv", "image", {"Content-Type": "text/csv"}),
    ("empty body", b"", {"Content-Type": "image/png"}),
    ("no content type", "image", {}),
    ("unsupported accept", "image", {"Content-Type": "image/png", "Accept": "text/csv"}),
])
def test_error_cases_answer_as_the_toolkit_does(pair, case, body, headers):
    """Transformer.transform catches every exception: status 500 (no handler here raises a toolkit error with its
    own status), body "<message>\\n<traceback>", no Content-Type. The runtime API in front of scones serve turns it
    into a 424 ModelError carrying that status and body (OriginalStatusCode/OriginalMessage)."""
    body = read_test_images()[0].read_bytes() if body == "image" else body
    (status, toolkit_headers, toolkit_body), (our_status, our_headers, our_body) = pair.both(
        "/invocations", body, headers)
    assert status == our_status == 500, (toolkit_body[:300], our_body[:300])
    assert "content-type" not in toolkit_headers and "content-type" not in our_headers
    assert message_line(our_body) == message_line(toolkit_body)
    assert b"\nTraceback (most recent call last):" in toolkit_body and b"\nTraceback (most recent call last):" in our_body

    runtime_status, runtime_headers, runtime_body = post(pair.scones.url, f"/endpoints/{ENDPOINT}/invocations", body,
                                                         headers)
    error = json.loads(runtime_body)
    assert (runtime_status, runtime_headers["x-amzn-errortype"]) == (424, "ModelError")
    assert error["OriginalStatusCode"] == status
    assert message_line(error["OriginalMessage"].encode()) == message_line(toolkit_body)


def test_ping_answers_as_torchserve(pair):
    toolkit_ping, our_ping = get(pair.toolkit.url, "/ping"), get(pair.scones.url, "/ping")
    assert toolkit_ping[0] == our_ping[0] == 200
    assert our_ping[2] == toolkit_ping[2]  # b'{\n  "status": "Healthy"\n}\n'
    assert our_ping[1]["content-type"] == toolkit_ping[1]["content-type"]


# --- a user's own handlers --------------------------------------------------------------------------

# Appended to the project's inference.py and packed as code/single.py (SAGEMAKER_PROGRAM=single.py): a
# predict_fn/output_fn pair written for one image per call, as the container calls them. Fed a batch of
# several requests' rows it would answer nested lists, and float() would fail on a row.
SINGLE_INPUT_HANDLERS = b'''

def predict_fn(input_data, model):
    with torch.inference_mode():
        return torch.softmax(model(input_data), dim=1).squeeze(0)


def output_fn(prediction, accept):
    return json.dumps([float(probability) for probability in prediction]), "application/json; handler=single"
'''


@pytest.fixture(scope="module")
def single_input_pair(toolkit_python, tmp_path_factory):
    folder = Path(testing.ensure_tiny_model())
    with tarfile.open(folder / "model.tar.gz") as original:
        inference = original.extractfile("code/inference.py").read()
    out = tmp_path_factory.mktemp("single-input")
    archive = archive_with_code(folder, out / "model", {"code/single.py": inference + SINGLE_INPUT_HANDLERS})
    # Any SAGEMAKER_TS_* variable: TorchServe may batch requests, and the toolkit still calls predict_fn per request.
    env = {"SAGEMAKER_PROGRAM": "single.py", "SAGEMAKER_TS_BATCH_SIZE": "4", "SAGEMAKER_TS_MAX_BATCH_DELAY": "20"}
    yield from serve_both(toolkit_python, archive.parent, out, env)


def test_a_predict_fn_for_one_input_works_under_concurrent_load_as_under_the_toolkit(single_input_pair, same_torch):
    images = [path.read_bytes() for path in read_test_images()]

    def ask(url: str, index: int) -> tuple[int, bytes]:
        status, _, body = post(url, "/invocations", images[index % len(images)], {"Content-Type": "image/png"})
        return status, body

    for server in (single_input_pair.toolkit, single_input_pair.scones):
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda index, url=server.url: ask(url, index), range(64)))
        assert all(status == 200 for status, _ in answers), [body[:200] for status, body in answers if status != 200]
        assert all(len(json.loads(body)) == 2 and all(isinstance(p, float) for p in json.loads(body))
                   for _, body in answers)
        if server is single_input_pair.toolkit:
            expected = answers
    if same_torch:
        assert answers == expected
    else:  # the tolerance of test_probabilities_equal_the_toolkits_on_the_test_images
        assert [json.loads(body) for _, body in answers] == [
            pytest.approx(json.loads(body), abs=1e-4) for _, body in expected]


def test_the_module_named_by_sagemaker_program_is_the_one_served(single_input_pair):
    """SAGEMAKER_PROGRAM=single.py: sagemaker_inference.environment strips .py and imports code/single.py,
    whose output_fn names itself in the Content-Type (code/inference.py, still in the archive, would not)."""
    body = read_test_images()[0].read_bytes()
    (_, toolkit_headers, _), (_, our_headers, _) = single_input_pair.both("/invocations", body, {"Content-Type": "image/png"})
    assert toolkit_headers["content-type"] == our_headers["content-type"] == "application/json; handler=single"


# --- no code/ at all: the container's default handlers ----------------------------------------------

@pytest.fixture(scope="module")
def torchscript_pair(toolkit_python, tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("torchscript")
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), buffer)
    with tarfile.open(out / "model.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("model.pt")
        info.size = len(buffer.getvalue())
        archive.addfile(info, io.BytesIO(buffer.getvalue()))
    yield from serve_both(toolkit_python, out, out)


@pytest.mark.parametrize("body, headers", [
    (b"[[1.0, 2.0, 3.0]]", {"Content-Type": "application/json"}),
    (b"[[1.0, 2.0, 3.0], [4, 5, 6]]", {"Content-Type": "application/json", "Accept": "*/*"}),
    (b"1,2,3", {"Content-Type": "text/csv", "Accept": "text/csv"}),
    (b"1,2,3\n4,5,6", {"Content-Type": "text/csv", "Accept": "application/json"}),
    (b"[[1.0, 2.0, 3.0]]", {"Content-Type": "application/json", "Accept": "text/csv, application/json"}),
])
def test_the_default_handlers_answer_as_the_toolkits(torchscript_pair, body, headers):
    (status, toolkit_headers, toolkit_body), (our_status, our_headers, our_body) = torchscript_pair.both(
        "/invocations", body, headers)
    assert status == our_status == 200, (toolkit_body[:300], our_body[:300])
    assert our_headers.get("content-type") == toolkit_headers.get("content-type")
    assert our_body == toolkit_body


@pytest.mark.parametrize("body, headers", [
    (b"\x89PNG", {"Content-Type": "image/png"}),
    (b"[[1.0, 2.0, 3.0]]", {"Content-Type": "application/json; charset=utf-8"}),
    (b"[[1.0, 2.0, 3.0]]", {"Content-Type": "application/json", "Accept": "text/html"}),
    (b"[[1.0, 2.0]]", {"Content-Type": "application/json"}),
])
def test_the_default_handlers_fail_as_the_toolkits(torchscript_pair, body, headers):
    (status, _, toolkit_body), (our_status, _, our_body) = torchscript_pair.both("/invocations", body, headers)
    assert status == our_status == 500
    assert message_line(our_body) == message_line(toolkit_body)
