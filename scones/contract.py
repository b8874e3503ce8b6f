"""The facts every part of Scones agrees on: the classes, the confidence threshold, the endpoint's
name and the data capture location.

The Lambda zip (lambdas/config.py) and the SageMaker source directory (local_model/network.py,
train.py) run where this package is not installed, so they carry their own copies;
tests/test_contract.py pins those copies to these values.
"""
from __future__ import annotations

# Index i of the endpoint's answer [p_bicycle, p_motorcycle] is the probability of CLASSES[i];
# the label of a training image is the index of its class folder's name.
CLASSES = ("bicycle", "motorcycle")

# Below this top probability the workflow fails loudly (ThresholdConfidenceNotMet) instead of
# routing a driver on a guess.
THRESHOLD = 0.93

ENDPOINT_NAME = "scones-classifier"
VARIANT_NAME = "AllTraffic"

# Data capture files land under s3://<bucket>/<CAPTURE_PREFIX>/<endpoint>/<variant>/yyyy/mm/dd/hh/,
# as SageMaker Model Monitor writes them.
CAPTURE_PREFIX = "data_capture"
