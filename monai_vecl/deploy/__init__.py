"""Clinical deployment: DICOM → frontal chest selection → zero-shot VECL findings → DICOM SR.

Modules (import them directly; this package imports nothing so ``import monai_vecl`` stays light):
``dicom_image`` (display grayscale from DICOM), ``selection`` (which instance to read),
``sr`` (the TID 1500 Structured Report), ``pipeline`` (``StudyPipeline``: one study → one SR),
``operators`` (MONAI Deploy App SDK operators; imports the SDK) and the DICOM gateway modules.
"""
