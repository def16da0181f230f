"""Clinical deployment: DICOM → frontal chest selection → zero-shot VECL findings → DICOM SR.

Modules (import them directly; this package imports nothing so ``import monai_vecl`` stays light):
``selection`` (which instance to read), ``sr`` (the TID 1500 Structured Report), ``seg`` (the
grounding SEG), ``pipeline`` (``StudyPipeline``: one study → one SR; display grayscale comes from
:mod:`monai_vecl.data.dicom_image`),
``operators`` (MONAI Deploy App SDK operators; imports the SDK) and the DICOM gateway modules.
"""
