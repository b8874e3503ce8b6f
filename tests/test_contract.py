"""The copies of the contract that must travel without the scones package agree with it.

The Lambda zip holds only lambdas/ (deploy/packaging.py) and the SageMaker training job and
endpoint receive only the source directory (local_model/, deploy/sagemaker.py's source_tarball),
so each carries the classes and the threshold itself; scones/contract.py is what they must equal.
"""
from __future__ import annotations

import io
import tarfile

from scones import contract
from scones.deploy import packaging, sagemaker
from scones.lambdas import config as lambda_config
from scones.local_model import network, train


def test_the_lambda_zip_carries_the_contract():
    assert lambda_config.CLASSES == contract.CLASSES
    assert lambda_config.DEFAULT_THRESHOLD == contract.THRESHOLD
    assert lambda_config.DEFAULT_ENDPOINT_NAME == contract.ENDPOINT_NAME


def test_the_model_code_carries_the_contract():
    assert network.CLASSES == contract.CLASSES
    assert train.parse_args([]).threshold == contract.THRESHOLD


def test_what_ships_to_aws_is_only_the_self_contained_code():
    """The source directory holds the model code alone (no endpoint server, capture writer or staging), and
    neither it nor the Lambda zip imports the scones package, which is not installed there."""
    with tarfile.open(fileobj=io.BytesIO(sagemaker.source_tarball()), mode="r:gz") as archive:
        sources = {member.name: archive.extractfile(member).read().decode() for member in archive.getmembers()
                   if member.isfile()}
    assert set(sources) <= {"__init__.py", "train.py", "inference.py", "network.py", "outliers.py", "requirements.txt"}
    assert {"train.py", "inference.py", "network.py"} <= set(sources)
    zipped = {path.name: path.read_text() for path in packaging.package_files()}
    for name, text in {**sources, **zipped}.items():
        assert "import scones" not in text and "from scones" not in text, name
