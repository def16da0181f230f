"""Evaluation-time image preprocessing shared by validation, evaluation and deployment (docs/method.md §Preprocessing).

Grayscale in [0, 1] → longest side ``load_size`` keeping aspect → zero-pad to a square →
centre crop ``image_size`` → repeat to 3 channels. Intensities stay in [0, 1]: the network
normalises them with the statistics in its config and weights. The training loaders (DALI and
MONAI) implement the same geometry with augmentation on top.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

def read_gray(path: str | os.PathLike) -> np.ndarray:
    """A PNG/JPEG image file as float32 [H, W] in [0, 1], scaled by the file's bit depth (8-bit / 255,
    16-bit / 65535), not by its values, so a dark 16-bit image stays dark; colour files are converted to gray.
    A DICOM file (``DICM`` after its 128-byte preamble, whatever its name) is shown as a viewer displays it
    (:func:`monai_vecl.data.dicom_image.dicom_to_gray01`); what cannot be shown raises ``ValueError``."""
    from PIL import Image

    if is_dicom(path):
        import pydicom  # the deploy extra: only needed for DICOM files

        from monai_vecl.data.dicom_image import dicom_to_gray01

        try:
            ds = pydicom.dcmread(path)
        except (pydicom.errors.InvalidDicomError, EOFError) as err:
            raise ValueError(f"not a readable DICOM file: {err}") from err
        return dicom_to_gray01(ds)
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            return (np.asarray(img, dtype=np.float32) / 65535.0).clip(0, 1)
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (the ``DICM`` prefix after the 128-byte preamble)."""
    with open(path, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def resize_longest_and_pad(image: torch.Tensor, load_size: int) -> torch.Tensor:
    """[H, W] float → [load_size, load_size], longest side scaled to ``load_size``, zero padding centred."""
    h, w = image.shape[-2:]
    scale = load_size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(image[None, None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    top, left = (load_size - nh) // 2, (load_size - nw) // 2
    out = torch.zeros(load_size, load_size, dtype=resized.dtype)
    out[top : top + nh, left : left + nw] = resized
    return out


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top : top + size, left : left + size]


def preprocess_gray(
    image: np.ndarray | torch.Tensor,
    image_size: int = 224,
    load_size: int = 256,
) -> torch.Tensor:
    """Model input [3, image_size, image_size] from a 2-D grayscale image with values in [0, 1]."""
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("image has non-finite pixel values")
    t = center_crop(resize_longest_and_pad(t.clamp(0, 1), load_size), image_size)
    return t.expand(3, -1, -1).contiguous()
