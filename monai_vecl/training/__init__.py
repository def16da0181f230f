"""VECL training: manifest sampling, DALI/MONAI loaders, all-gather for DDP, and the MONAI-engine trainer.

Import the submodules directly (``monai_vecl.training.engines`` etc.); the bundle configs do.
"""
