"""Load a model.tar.gz and run its handlers exactly as the SageMaker PyTorch inference toolkit does.

What the container runs (sagemaker-pytorch-inference 2.0.25 under TorchServe 0.12, the versions
the pytorch 2.5.1 py311 images pin) is sagemaker_inference.transformer.Transformer with
sagemaker_pytorch_serving_container.default_pytorch_inference_handler's defaults. Per request:

- the Content-Type header as sent, or None when there is none (utils.retrieve_content_type_header);
- Accept as sent; missing or exactly "*/*" becomes $SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
  (default application/json);
- a body whose Content-Type is exactly application/json or text/csv is decoded as UTF-8 before
  input_fn (a PNG sent as application/json fails there); every other body reaches input_fn as
  the bytearray TorchServe hands over;
- transform_fn(model, body, content_type, accept), or input_fn -> predict_fn -> output_fn, one
  call each: TorchServe's batchSize is 1 unless SAGEMAKER_TS_BATCH_SIZE is set, and even then
  the toolkit loops over the requests of a batch;
- a handler may take one argument more than the toolkit passes: the context (here a
  HandlerContext with the fields the toolkit's handlers read);
- the result is (body, content type) or a body alone, answered as the Accept type;
- any exception: status 500 and body "<str(error)>\\n<traceback>"; an exception that is a
  sagemaker_inference.errors.BaseInferenceToolkitError keeps its status_code and message
  (Transformer.handle_error). No Content-Type on errors.

The user module is $SAGEMAKER_PROGRAM (default inference.py) in <model_dir>/code, which is on
sys.path as PYTHONPATH is in the container; without it every handler is the container's
default. pre_model_fn(model_dir) and model_warmup_fn(model_dir, model) run around model_fn
when the module defines them. The proof that this equals the toolkit is
tests/parity/test_serving_parity.py, which runs the real one.

LoadedModel.invoke_batch is scones serve's own opt-in dynamic batching (--max-batch-size), not
the container's: input_fn per request, the tensors concatenated along the first dimension,
predict_fn once, the rows split back, output_fn per request. It batches only what is safe:
tensors of the same dtype, device and trailing shape, and a prediction with one row per input
row; anything else runs one request at a time.
"""
from __future__ import annotations

import importlib.util
import inspect
import io
import json
import os
import sys
import tarfile
import textwrap
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Protocol, Sequence, TypeGuard

from scones.errors import SconesError

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"
ANY_ACCEPT = "*/*"
UTF8_TYPES = (JSON, CSV)                  # sagemaker_inference.content_types.UTF8_TYPES
PROGRAM_ENV = "SAGEMAKER_PROGRAM"         # the user module; the toolkit strips a trailing .py
DEFAULT_PROGRAM = "inference.py"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
DEFAULT_MODEL_FILENAME = "model.pt"       # what the container's default model_fn loads (TorchScript)
TOOLKIT_ERROR = ("sagemaker_inference.errors", "BaseInferenceToolkitError")


class UnsupportedFormatError(Exception):
    """sagemaker_inference.errors.UnsupportedFormatError: a plain Exception, so the container answers 500."""

    def __init__(self, content_type):
        super().__init__(textwrap.dedent(
            """Content type %s is not supported by this framework.

            Please implement input_fn to to deserialize the request data or an output_fn to
            serialize the response. For more information, see the SageMaker Python SDK README."""
            % content_type))


class ModelLoadError(SconesError):
    """sagemaker_pytorch_serving_container.default_pytorch_inference_handler.ModelLoadError."""


class UnsupportedOutputError(Exception):
    """TorchServe could not serialise what the handlers returned: it answers 503."""

    status_code = 503


class _ToolkitError(Protocol):
    """What BaseInferenceToolkitError carries; matched by class name, the toolkit is not imported here."""

    status_code: int
    message: str


def _is_toolkit_error(error: BaseException) -> TypeGuard[_ToolkitError]:
    return any((cls.__module__, cls.__name__) == TOOLKIT_ERROR for cls in type(error).__mro__)


def status_of(error: BaseException) -> int:
    """The status the container answers with for an exception a handler raised."""
    if _is_toolkit_error(error) or isinstance(error, UnsupportedOutputError):
        return int(error.status_code)
    return 500


def message_of(error: BaseException) -> str:
    """Transformer.handle_error's message: a toolkit error's own, else str(error) or "Invalid Request"."""
    if _is_toolkit_error(error):
        return str(error.message)
    if isinstance(error, UnsupportedOutputError):
        return "Unsupported model output data type."
    return str(error) or "Invalid Request"


def error_body(error: BaseException) -> bytes:
    """The container's error body: the message, a newline, then the traceback."""
    if isinstance(error, UnsupportedOutputError):
        return message_of(error).encode()
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"{message_of(error)}\n{trace}".encode()


@dataclass
class HandlerContext:
    """What a handler taking a `context` argument gets: the fields of TorchServe's Context the toolkit reads."""

    model_dir: str
    model_name: str = "model"
    system_properties: dict = field(default_factory=dict)

    def __post_init__(self):
        self.system_properties = {"model_dir": self.model_dir, "gpu_id": None, "batch_size": 1,
                                  **self.system_properties}


def _call(handler: Callable, context: HandlerContext | None, *args):
    """Transformer._run_handler_function: pass the context when the handler takes one argument more."""
    count = len(inspect.signature(handler).parameters)
    if count == len(args):
        return handler(*args)
    if count == len(args) + 1:
        return handler(*args, context)
    raise TypeError(f"{handler.__name__} takes {count} arguments but {len(args)} were given.")


# --- the container's default handlers (DefaultPytorchInferenceHandler, on CPU) ------------------

def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_model_fn(model_dir: str):
    import torch

    path = os.path.join(model_dir, DEFAULT_MODEL_FILENAME)
    if not os.path.exists(path):
        candidates = [name for name in os.listdir(model_dir)
                      if os.path.isfile(os.path.join(model_dir, name)) and os.path.splitext(name)[1] in (".pt", ".pth")]
        if len(candidates) != 1:
            raise ValueError(f"Exactly one .pth or .pt file is required for PyTorch models: {candidates}")
        path = os.path.join(model_dir, candidates[0])
    try:
        model = torch.jit.load(path, map_location=_device())
    except RuntimeError as error:
        raise ModelLoadError(f"Failed to load {path}. Please ensure model is saved using torchscript.") from error
    return model.to(_device())


def default_input_fn(input_data, content_type):
    import numpy as np
    import torch

    if content_type == JSON:
        array = np.array(json.loads(input_data))
    elif content_type == CSV:
        array = np.genfromtxt(io.StringIO(input_data), delimiter=",")
    elif content_type == NPY:
        # The toolkit loads with allow_pickle=True; an object array (code from the request) is refused here.
        array = np.load(io.BytesIO(input_data), allow_pickle=False)
    elif content_type == NPZ:
        import scipy.sparse

        array = scipy.sparse.load_npz(io.BytesIO(input_data))
    else:
        raise UnsupportedFormatError(content_type)
    tensor = torch.FloatTensor(array) if content_type in UTF8_TYPES else torch.from_numpy(array)
    return tensor.to(_device())


def default_predict_fn(data, model):
    import torch

    with torch.no_grad():
        model = model.to(_device())
        model.eval()
        return model(data.to(_device()))


def default_output_fn(prediction, accept: str):
    import numpy as np
    import torch

    if type(prediction) is torch.Tensor:
        prediction = prediction.detach().cpu().numpy().tolist()
    for content_type in accept.replace(" ", "").split(","):
        if content_type == JSON:
            return json.dumps(prediction, default=lambda value: value.tolist() if hasattr(value, "tolist")
                              else json.JSONEncoder().default(value))
        if content_type == CSV:
            stream = io.StringIO()
            np.savetxt(stream, prediction, delimiter=",", fmt="%s")
            return stream.getvalue().encode("utf-8")
        if content_type == NPY:
            buffer = io.BytesIO()
            np.save(buffer, prediction)
            return buffer.getvalue()
    raise UnsupportedFormatError(accept)


# --- serving -------------------------------------------------------------------------------------

def default_accept() -> str:
    return os.environ.get(DEFAULT_ACCEPT_ENV, JSON)


@dataclass
class LoadedModel:
    model_dir: Path
    model: Any
    input_fn: Callable
    predict_fn: Callable
    output_fn: Callable
    transform_fn: Callable | None             # the module's own; None: input_fn -> predict_fn -> output_fn
    context: HandlerContext | None = None
    default_accept: str = JSON

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        """One request as Transformer.transform serves it; returns (response body, response content type)."""
        data, content_type, accept = self._request(body, content_type, accept)
        if self.transform_fn is not None:
            return _response(_call(self.transform_fn, self.context, self.model, data, content_type, accept), accept)
        prediction = _call(self.predict_fn, self.context, _call(self.input_fn, self.context, data, content_type),
                           self.model)
        return _response(_call(self.output_fn, self.context, prediction, accept), accept)

    def _request(self, body: bytes, content_type: str | None, accept: str | None):
        if not accept or accept == ANY_ACCEPT:
            accept = self.default_accept
        # TorchServe hands the body over as a bytearray; the toolkit decodes only these two types.
        data = bytes(body).decode("utf-8") if content_type in UTF8_TYPES else bytearray(body)
        return data, content_type, accept

    def invoke_batch(self, requests: Sequence[tuple[bytes, str | None, str | None]]) -> list[tuple[bytes, str] | Exception]:
        """scones serve's opt-in batching: one (body, content type) or exception per request, in order.

        A request whose input_fn or output_fn fails gets its own exception; the others are
        unaffected. If the shared predict_fn call fails, every request in that call gets its error.
        """
        if len(requests) == 1 or self.transform_fn is not None:
            return [self._invoke_alone(*request) for request in requests]
        results: list = [None] * len(requests)
        accepts: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, Any]]] = {}
        for index, request in enumerate(requests):
            try:
                data, content_type, accepts[index] = self._request(*request)
                data = _call(self.input_fn, self.context, data, content_type)
            except Exception as error:
                results[index] = error
                continue
            groups.setdefault(_batch_key(data, index), []).append((index, data))
        for group in groups.values():
            if len(group) == 1:
                index, data = group[0]
                results[index] = self._predict_alone(data, accepts[index])
            else:
                self._predict_together(group, accepts, results)
        return results

    def _invoke_alone(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str] | Exception:
        try:
            return self.invoke(body, content_type, accept)
        except Exception as error:
            return error

    def _predict_alone(self, data, accept: str) -> tuple[bytes, str] | Exception:
        try:
            prediction = _call(self.predict_fn, self.context, data, self.model)
            return _response(_call(self.output_fn, self.context, prediction, accept), accept)
        except Exception as error:
            return error

    def _predict_together(self, group: list[tuple[int, Any]], accepts: list[str], results: list) -> None:
        import torch

        rows = [len(data) for _, data in group]
        try:
            prediction = _call(self.predict_fn, self.context, torch.cat([data for _, data in group]), self.model)
        except Exception as error:
            for index, _ in group:
                results[index] = error
            return
        if not (isinstance(prediction, torch.Tensor) and prediction.ndim >= 1 and len(prediction) == sum(rows)):
            # Not one output row per input row: rows cannot be told apart, so predict each request alone.
            for index, data in group:
                results[index] = self._predict_alone(data, accepts[index])
            return
        for (index, _), part in zip(group, torch.split(prediction, rows)):
            try:
                results[index] = _response(_call(self.output_fn, self.context, part, accepts[index]), accepts[index])
            except Exception as error:
                results[index] = error


def _response(result, accept: str) -> tuple[bytes, str]:
    """The toolkit takes (body, content type) or a body alone (then the Accept type); TorchServe writes
    bytes as they are, str as UTF-8, a tensor with torch.save and anything else as indented JSON."""
    response, response_type = result if isinstance(result, tuple) else (result, accept)
    if isinstance(response, (bytes, bytearray)):
        return bytes(response), response_type
    if isinstance(response, str):
        return response.encode("utf-8"), response_type
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(response, torch.Tensor):
        buffer = io.BytesIO()
        torch.save(response, buffer)
        return buffer.getvalue(), response_type
    try:
        return json.dumps(response, indent=2).encode("utf-8"), response_type
    except TypeError as error:
        raise UnsupportedOutputError(f"cannot serialise a {type(response).__name__}") from error


def _batch_key(data, index: int) -> tuple:
    """Inputs with equal keys can be concatenated along dim 0; a key with the index never matches another."""
    torch = sys.modules.get("torch")  # no torch imported: nothing here is a tensor
    if (torch is not None and isinstance(data, torch.Tensor) and data.layout == torch.strided
            and data.ndim >= 1 and len(data) > 0):
        return ("tensor", data.dtype, data.device, tuple(data.shape[1:]))
    return ("alone", index)


_import_lock = threading.Lock()


class UnsafeArchiveError(SconesError, tarfile.TarError):
    """A tar member would land outside the destination, or is a device: refused, as the "data" filter does."""


def _inside(path: str | os.PathLike, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(root)


def _checked_member(member: tarfile.TarInfo, root: Path) -> tarfile.TarInfo:
    """What tarfile.data_filter refuses on Python 3.11.4+ and 3.12+, checked by hand for 3.11.0-3.11.3."""
    name = member.name
    if os.path.isabs(name) or name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"member {name!r} has an absolute path")
    if ".." in Path(name).parts:
        raise UnsafeArchiveError(f"member {name!r} has a '..' in its path")
    if not _inside(root / name, root):
        raise UnsafeArchiveError(f"member {name!r} would be written outside {root}")
    if member.isdev():
        raise UnsafeArchiveError(f"member {name!r} is a device or FIFO")
    if member.issym():
        target = member.linkname
        if os.path.isabs(target) or not _inside(root / os.path.dirname(name) / target, root):
            raise UnsafeArchiveError(f"symlink {name!r} points outside {root}: {target!r}")
    if member.islnk():
        target = member.linkname
        if os.path.isabs(target) or not _inside(root / target, root):
            raise UnsafeArchiveError(f"hard link {name!r} points outside {root}: {target!r}")
    if member.isfile() or member.isdir():
        member.mode &= 0o755   # as the data filter: no setuid/setgid/sticky, no group/other write
    return member


def extract_tar(tar: tarfile.TarFile, destination: str | os.PathLike) -> None:
    """tar.extractall(destination) refusing paths that escape it: with the "data" filter where this
    Python has one (3.11.4+, 3.12+), else with the same checks made here (3.11.0-3.11.3 lack `filter=`).
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(destination, filter="data")
        return
    root = Path(os.path.realpath(destination))
    members = [_checked_member(member, root) for member in tar.getmembers()]
    tar.extractall(destination, members=members)


def unpack_model(archive: str | os.PathLike, model_dir: str | os.PathLike) -> Path:
    """Unpack model.tar.gz into model_dir (like /opt/ml/model) and return it."""
    archive, model_dir = Path(archive), Path(model_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"model archive {archive} does not exist")
    model_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            extract_tar(tar, model_dir)
    except tarfile.TarError as error:
        raise ValueError(f"model archive {archive} is not a readable tar.gz: {error}") from error
    return model_dir


def program_module() -> str:
    """The user module's name from $SAGEMAKER_PROGRAM, as sagemaker_inference.environment parses it."""
    program = os.environ.get(PROGRAM_ENV, DEFAULT_PROGRAM)
    return program[:-3] if program.endswith(".py") else program


def import_handlers(model_dir: str | os.PathLike) -> ModuleType | None:
    """The module <model_dir>/code/$SAGEMAKER_PROGRAM, imported as the container does (code/ on sys.path),
    or None when the model has no such script (the container's default handlers then serve it)."""
    model_dir = Path(model_dir).resolve()
    code_dir = model_dir / "code"
    name = program_module()
    script = next((path for path in (code_dir / f"{name}.py", code_dir / name / "__init__.py") if path.is_file()), None)
    if script is None:
        return None
    with _import_lock:
        # Helpers beside inference.py (e.g. code/network.py) import by bare name, as in the container.
        if str(code_dir) not in sys.path:
            sys.path.insert(0, str(code_dir))
        # A unique module name so two models in one process do not share a cached module.
        unique = f"{name}_{abs(hash(str(model_dir)))}"
        spec = importlib.util.spec_from_file_location(unique, script)
        if spec is None or spec.loader is None:  # only for a file Python has no loader for: not a .py
            raise ImportError(f"cannot import the handlers in {script}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        spec.loader.exec_module(module)
    return module


def load_model(model_dir: str | os.PathLike) -> LoadedModel:
    """Import <model_dir>/code/$SAGEMAKER_PROGRAM and call its model_fn, with the container's defaults
    (Transformer.validate_and_initialize)."""
    model_dir = Path(model_dir).resolve()
    module = import_handlers(model_dir)

    def handler(attribute: str) -> Callable | None:
        return getattr(module, attribute, None)

    if handler("transform_fn") and (handler("input_fn") or handler("predict_fn") or handler("output_fn")):
        raise ValueError("Cannot use transform_fn implementation in conjunction with "
                         "input_fn, predict_fn, and/or output_fn implementation")
    context = HandlerContext(model_dir=str(model_dir))
    if pre_model_fn := handler("pre_model_fn"):
        _call(pre_model_fn, context, str(model_dir))
    model = _call(handler("model_fn") or default_model_fn, context, str(model_dir))
    if model_warmup_fn := handler("model_warmup_fn"):
        _call(model_warmup_fn, context, str(model_dir), model)
    return LoadedModel(
        model_dir=model_dir,
        model=model,
        input_fn=handler("input_fn") or default_input_fn,
        predict_fn=handler("predict_fn") or default_predict_fn,
        output_fn=handler("output_fn") or default_output_fn,
        transform_fn=handler("transform_fn"),
        context=context,
        default_accept=default_accept(),
    )
