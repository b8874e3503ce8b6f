"""Load a model.tar.gz and run its handlers the way the SageMaker PyTorch serving container does.

The container unpacks the artifact into a model directory, puts <model_dir>/code on sys.path,
imports `inference` and calls model_fn(model_dir) once; then per request
input_fn(body, content_type) -> predict_fn(data, model) -> output_fn(prediction, accept), or
transform_fn(model, body, content_type, accept) when the script defines one. A handler the script
leaves out falls back to the container's default, as in sagemaker-pytorch-inference-toolkit.

LoadedModel.invoke_batch serves several waiting requests with one predict_fn call (the server's
dynamic batching): input_fn per request, the tensors concatenated along the first dimension,
predict_fn once, the rows split back, output_fn per request. It batches only what is safe:
tensors of the same dtype, device and trailing shape, and a prediction with one row per input
row; anything else runs one request at a time.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

DEFAULT_ACCEPT = "application/json"   # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT in the container
ANY_ACCEPT = "*/*"
DEFAULT_MODEL_FILENAME = "model.pt"   # what the container's default model_fn loads (TorchScript)


class InferenceError(Exception):
    """An error raised while serving, carrying the HTTP status the container would answer with.

    Mirrors sagemaker_inference.errors.GenericInferenceToolkitError: any exception a handler
    raises that has an int `status_code` keeps it; every other exception becomes a 500.
    """

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class UnsupportedFormatError(InferenceError):
    def __init__(self, content_type: str):
        super().__init__(415, f"Content type {content_type} is not supported by this framework.")


def status_of(error: BaseException) -> int:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) and 400 <= status <= 599 else 500


def message_of(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text if text else type(error).__name__


# --- the container's default handlers ------------------------------------------------------------

def default_model_fn(model_dir: str):
    import torch

    path = os.path.join(model_dir, DEFAULT_MODEL_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"inference.py defines no model_fn and the default one needs {DEFAULT_MODEL_FILENAME} "
            f"(TorchScript) in {model_dir}, which is missing"
        )
    return torch.jit.load(path, map_location="cpu")


def default_input_fn(input_data: bytes, content_type: str):
    import numpy as np
    import torch

    media_type = _media_type(content_type)
    if media_type == "application/json":
        return torch.FloatTensor(np.array(json.loads(input_data)))
    if media_type == "text/csv":
        text = input_data.decode() if isinstance(input_data, bytes) else input_data
        return torch.FloatTensor(np.genfromtxt(io.StringIO(text), delimiter=",", ndmin=1))
    if media_type == "application/x-npy":
        return torch.from_numpy(np.load(io.BytesIO(input_data), allow_pickle=False))
    raise UnsupportedFormatError(content_type)


def default_predict_fn(data, model):
    import torch

    model.eval()
    with torch.no_grad():
        return model(data)


def default_output_fn(prediction, accept: str):
    import numpy as np
    import torch

    if isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().cpu().numpy().tolist()
    for content_type in (part.strip() for part in accept.split(",")):
        media_type = _media_type(content_type)
        if media_type == "application/json":
            return json.dumps(prediction), media_type
        if media_type == "text/csv":
            rows = np.atleast_2d(np.asarray(prediction))
            return "\n".join(",".join(str(value) for value in row) for row in rows), media_type
        if media_type == "application/x-npy":
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(prediction))
            return buffer.getvalue(), media_type
    raise UnsupportedFormatError(accept)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


# --- loading -------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    model_dir: Path
    model: Any
    input_fn: Callable
    predict_fn: Callable
    output_fn: Callable
    transform_fn: Callable | None

    def invoke(self, body: bytes, content_type: str, accept: str | None) -> tuple[bytes, str]:
        """One request through the handlers; returns (response body, response content type)."""
        accept = _effective_accept(accept)
        if self.transform_fn is not None:
            return _response(self.transform_fn(self.model, body, content_type, accept), accept)
        data = self.input_fn(body, content_type)
        return _response(self.output_fn(self.predict_fn(data, self.model), accept), accept)

    def invoke_batch(self, requests: Sequence[tuple[bytes, str, str | None]]) -> list[tuple[bytes, str] | Exception]:
        """(body, content type, accept) requests -> one (body, content type) or exception per request, in order.

        A request whose input_fn or output_fn fails gets its own exception; the others are
        unaffected. If the shared predict_fn call fails, every request in that call gets its error.
        """
        if len(requests) == 1 or self.transform_fn is not None:
            return [self._invoke_alone(*request) for request in requests]
        results: list = [None] * len(requests)
        accepts = [_effective_accept(accept) for _, _, accept in requests]
        groups: dict[tuple, list[tuple[int, Any]]] = {}
        for index, (body, content_type, _) in enumerate(requests):
            try:
                data = self.input_fn(body, content_type)
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

    def _invoke_alone(self, body: bytes, content_type: str, accept: str | None) -> tuple[bytes, str] | Exception:
        try:
            return self.invoke(body, content_type, accept)
        except Exception as error:
            return error

    def _predict_alone(self, data, accept: str) -> tuple[bytes, str] | Exception:
        try:
            return _response(self.output_fn(self.predict_fn(data, self.model), accept), accept)
        except Exception as error:
            return error

    def _predict_together(self, group: list[tuple[int, Any]], accepts: list[str], results: list) -> None:
        import torch

        rows = [len(data) for _, data in group]
        try:
            prediction = self.predict_fn(torch.cat([data for _, data in group]), self.model)
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
                results[index] = _response(self.output_fn(part, accepts[index]), accepts[index])
            except Exception as error:
                results[index] = error


def _effective_accept(accept: str | None) -> str:
    return DEFAULT_ACCEPT if not accept or accept.strip() == ANY_ACCEPT else accept


def _response(result, accept: str) -> tuple[bytes, str]:
    # Like the toolkit: a handler may return the body alone or (body, content type).
    response, response_type = result if isinstance(result, tuple) else (result, accept)
    if isinstance(response, str):
        response = response.encode()
    return bytes(response), response_type


def _batch_key(data, index: int) -> tuple:
    """Inputs with equal keys can be concatenated along dim 0; a key with the index never matches another."""
    torch = sys.modules.get("torch")  # no torch imported: nothing here is a tensor
    if (torch is not None and isinstance(data, torch.Tensor) and data.layout == torch.strided
            and data.ndim >= 1 and len(data) > 0):
        return ("tensor", data.dtype, data.device, tuple(data.shape[1:]))
    return ("alone", index)


_import_lock = threading.Lock()


class UnsafeArchiveError(tarfile.TarError):
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


def load_model(model_dir: str | os.PathLike) -> LoadedModel:
    """Import <model_dir>/code/inference.py and call its model_fn, with container defaults."""
    model_dir = Path(model_dir).resolve()
    code_dir = model_dir / "code"
    script = code_dir / "inference.py"
    module = None
    if script.is_file():
        with _import_lock:
            # Helpers beside inference.py (e.g. code/network.py) import by bare name, as in the container.
            if str(code_dir) not in sys.path:
                sys.path.insert(0, str(code_dir))
            # A unique module name so two models in one process do not share a cached module.
            name = f"inference_{abs(hash(str(model_dir)))}"
            spec = importlib.util.spec_from_file_location(name, script)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)

    def handler(name: str, default: Callable | None) -> Callable | None:
        return getattr(module, name, None) or default

    model_fn = handler("model_fn", default_model_fn)
    return LoadedModel(
        model_dir=model_dir,
        model=model_fn(str(model_dir)),
        input_fn=handler("input_fn", default_input_fn),
        predict_fn=handler("predict_fn", default_predict_fn),
        output_fn=handler("output_fn", default_output_fn),
        transform_fn=handler("transform_fn", None),
    )
