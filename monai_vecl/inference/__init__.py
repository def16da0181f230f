"""Inference: the contract between a trained VECL network and everything that scores with it
(training validation, evaluation, deployment) — preprocessing, weights, prompts, POS / PNC."""

from monai_vecl.inference.zero_shot import (
    MODES,
    NEG_TEMPLATE,
    POS_TEMPLATE,
    ZeroShotClassifier,
    load_weights,
    pnc,
    preprocess,
)

__all__ = ["MODES", "NEG_TEMPLATE", "POS_TEMPLATE", "ZeroShotClassifier", "load_weights", "pnc", "preprocess"]
