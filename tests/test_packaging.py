"""Deployment zips: deterministic bytes, the right files, importable handlers, stdlib + boto3 only."""
from __future__ import annotations

import ast
import io
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from scones.deploy.packaging import FUNCTIONS, LAMBDAS_DIR, build_zip, code_sha256, function_spec


def test_specs_keep_the_shared_names():
    assert [spec.name for spec in FUNCTIONS] == ["serializeImageData", "classifyImage", "filterInferences"]
    assert [spec.function_name("scones") for spec in FUNCTIONS] == [
        "scones-serializeImageData", "scones-classifyImage", "scones-filterInferences"]
    assert function_spec("classifyImage").environment == ("ENDPOINT_NAME",)
    assert function_spec("filterInferences").environment == ("THRESHOLD",)
    assert function_spec("serializeImageData").environment == ()
    assert function_spec("classifyImage").environment_values(endpoint_name="ep", threshold=0.93) == {"ENDPOINT_NAME": "ep"}
    assert function_spec("filterInferences").environment_values(endpoint_name="ep", threshold=0.93) == {"THRESHOLD": "0.93"}
    with pytest.raises(KeyError, match="no Lambda function named 'nope'"):
        function_spec("nope")


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda spec: spec.name)
def test_zip_is_byte_identical_across_builds(spec):
    assert build_zip(spec) == build_zip(spec)
    assert code_sha256(build_zip(spec)) == code_sha256(build_zip(spec))


def test_zip_bytes_ignore_timestamps_and_caches_but_not_content(tmp_path):
    spec = function_spec("filterInferences")
    copy = tmp_path / "lambdas"
    shutil.copytree(LAMBDAS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    original = build_zip(spec, copy)

    for path in copy.glob("*.py"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
        path.chmod(0o600)
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "config.cpython-311.pyc").write_bytes(b"cache")
    assert build_zip(spec, copy) == original

    with open(copy / "filter_inferences.py", "a") as stream:
        stream.write("\n# changed\n")
    assert code_sha256(build_zip(spec, copy)) != code_sha256(original)


def test_zip_holds_the_package_sorted_with_fixed_metadata():
    archive = zipfile.ZipFile(io.BytesIO(build_zip(FUNCTIONS[0])))
    names = archive.namelist()
    assert names == sorted(names)
    assert "lambdas/__init__.py" in names
    assert {f"lambdas/{path.name}" for path in LAMBDAS_DIR.glob("*.py")} == set(names)
    assert not [name for name in names if "__pycache__" in name or not name.endswith(".py")]
    for info in archive.infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert (info.external_attr >> 16) & 0o777 == 0o644
        assert info.compress_type == zipfile.ZIP_STORED


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda spec: spec.name)
def test_handler_imports_from_the_unpacked_zip(spec, tmp_path):
    zipfile.ZipFile(io.BytesIO(build_zip(spec))).extractall(tmp_path)
    module, attribute = spec.handler.rsplit(".", 1)
    check = (
        "import importlib, sys; sys.path.insert(0, sys.argv[1]);"
        f"m = importlib.import_module({module!r}); assert callable(m.{attribute});"
        "assert m.__file__.startswith(sys.argv[1]), m.__file__"
    )
    # The unpacked zip comes first on sys.path, and the check asserts the handler loads from
    # there, not from the project's editable install.
    env = {"PATH": os.environ.get("PATH", "")}
    result = subprocess.run([sys.executable, "-c", check, str(tmp_path)], env=env, cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_lambda_modules_import_only_stdlib_and_boto3():
    allowed = set(sys.stdlib_module_names) | {"boto3", "botocore", "lambdas", "__future__"}
    for path in LAMBDAS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            assert set(roots) <= allowed, f"{path.name} imports {roots}: Lambdas may use the stdlib and boto3 only"
