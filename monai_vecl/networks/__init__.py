"""VECL network: presets, encoders, fusion and the reference-checkpoint converter."""

from monai_vecl.networks.presets import PRESETS, VECLConfig, make_config
from monai_vecl.networks.reference_checkpoint import load_reference_checkpoint
from monai_vecl.networks.vecl import TextFeatures, VECLNetwork, VECLOutput, build_vecl

__all__ = [
    "PRESETS",
    "TextFeatures",
    "VECLConfig",
    "VECLNetwork",
    "VECLOutput",
    "build_vecl",
    "load_reference_checkpoint",
    "make_config",
]
