"""filterInferences: let the state through only when the most confident class meets the threshold."""
from __future__ import annotations

import logging

from . import config
from .errors import ThresholdConfidenceNotMet
from .events import ImageState

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


def lambda_handler(event, context):
    state = ImageState.from_event(event, require_inferences=True)
    threshold = config.threshold()
    confidence = max(state.inferences)
    predicted = config.CLASSES[state.inferences.index(confidence)]
    if confidence < threshold:
        raise ThresholdConfidenceNotMet(
            f"max confidence {confidence:.4f} ({predicted}) is below the threshold {threshold} "
            f"for {state.uri}; inferences {state.inferences}"
        )
    logger.info("%s is %s with confidence %.4f (threshold %s)", state.uri, predicted, confidence, threshold)
    return state.to_envelope()
