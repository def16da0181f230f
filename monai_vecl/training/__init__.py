"""VECL training: manifest sampling, DALI/MONAI loaders, all-gather for DDP, the trainer, MLflow tracking.

Import the submodules directly (``monai_vecl.training.trainer`` etc.); the bundle configs do.
"""
