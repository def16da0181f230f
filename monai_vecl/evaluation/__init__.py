"""Zero-shot evaluation, metrics, retrieval, linear probe, feature maps and reporting for VECL models.

Only the light zero-shot API is imported here; import the other modules directly
(``monai_vecl.metrics`` etc.) so plotting/MLflow stay out of the import path.
"""

from monai_vecl.inference.zero_shot import ZeroShotClassifier

__all__ = ["ZeroShotClassifier"]
