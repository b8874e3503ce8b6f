"""The three Lambda functions as deployable specs, and their deterministic deployment zips.

Each zip holds the whole `lambdas` package (its *.py files only), so the handler strings are
"lambdas.<module>.lambda_handler". Same source -> same bytes -> same CodeSha256, so a
redeploy of unchanged code changes nothing.
"""
from __future__ import annotations

import base64
import hashlib
import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

from scones.lambdas import config as lambda_config

LAMBDAS_DIR = Path(__file__).resolve().parent.parent / "lambdas"
PACKAGE_NAME = "lambdas"
RUNTIME = "python3.13"   # AWS-supported to 2029; also the only Python in the compose LocalStack image
# Zip's epoch; a fixed timestamp keeps the bytes independent of checkout times.
_FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644  # regular file, rw-r--r--


@dataclass(frozen=True)
class FunctionSpec:
    name: str                       # e.g. "serializeImageData"; deployed as f"{prefix}-{name}"
    module: str                     # e.g. "lambdas.serialize_image_data"
    environment: tuple[str, ...]    # names of the environment variables the function reads
    timeout: int                    # seconds
    memory: int                     # MB
    description: str
    runtime: str = RUNTIME

    @property
    def handler(self) -> str:
        return f"{self.module}.lambda_handler"

    def function_name(self, prefix: str = "scones") -> str:
        return f"{prefix}-{self.name}"

    def environment_values(self, *, endpoint_name: str, threshold: float) -> dict[str, str]:
        """The function's own environment for a deployment (extra variables are the caller's)."""
        known = {
            lambda_config.ENDPOINT_NAME: endpoint_name,
            lambda_config.THRESHOLD: str(threshold),
        }
        return {name: known[name] for name in self.environment}


FUNCTIONS: list[FunctionSpec] = [
    FunctionSpec(
        name="serializeImageData",
        module="lambdas.serialize_image_data",
        environment=(),
        timeout=30,
        memory=256,
        description="Scones: read an image from S3 and base64 it into the workflow state",
    ),
    FunctionSpec(
        name="classifyImage",
        module="lambdas.classify_image",
        environment=(lambda_config.ENDPOINT_NAME,),
        # Room for the endpoint's retries (lambdas/config.py): one full 60 s invocation and the failed attempts.
        timeout=math.ceil(lambda_config.ENDPOINT_TIME_BUDGET_S) + 10,
        memory=256,
        description="Scones: classify the image with the SageMaker endpoint",
    ),
    FunctionSpec(
        name="filterInferences",
        module="lambdas.filter_inferences",
        environment=(lambda_config.THRESHOLD,),
        timeout=10,
        memory=128,
        description="Scones: fail when the most confident class is below the threshold",
    ),
]


def function_spec(name: str) -> FunctionSpec:
    for spec in FUNCTIONS:
        if spec.name == name:
            return spec
    raise KeyError(f"no Lambda function named {name!r}; known: {[spec.name for spec in FUNCTIONS]}")


def package_files(source_dir: Path = LAMBDAS_DIR) -> list[Path]:
    """The files that go into every zip: the package's *.py files, sorted."""
    files = sorted(path for path in source_dir.glob("*.py") if path.is_file())
    if not any(path.name == "__init__.py" for path in files):
        raise FileNotFoundError(f"{source_dir} is not a Python package (no __init__.py)")
    return files


def build_zip(spec: FunctionSpec, source_dir: Path = LAMBDAS_DIR) -> bytes:
    """The deployment zip of one function; byte-identical for identical source."""
    module_file = source_dir / (spec.module.rsplit(".", 1)[-1] + ".py")
    if not module_file.is_file():
        raise FileNotFoundError(f"handler module of {spec.name} not found: {module_file}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in package_files(source_dir):
            info = zipfile.ZipInfo(f"{PACKAGE_NAME}/{path.name}", date_time=_FIXED_DATE_TIME)
            # Stored, not deflated: deflate output may differ between zlib builds, and the
            # sources are small; so every machine builds the same bytes.
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = _FILE_MODE << 16
            info.create_system = 3  # unix, so external_attr is read as a mode everywhere
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_sha256(zip_bytes: bytes) -> str:
    """The CodeSha256 Lambda reports for this zip (base64 of the SHA-256 digest)."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode("ascii")
