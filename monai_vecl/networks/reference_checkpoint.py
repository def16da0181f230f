"""Load a VECL reference checkpoint (PyTorch Lightning, WVeLong/VECL) into a :class:`VECLNetwork`.

The reference ``state_dict`` carries the prefix ``VECL_model.``. Text encoder and fusion keys
match ours one to one, except the fusion layers' ``self_attn`` and ``norm1`` weights, which the
reference builds but never uses (its layers skip query self-attention); they are dropped. The
image encoder is a timm-style ViT (M3AE ``MRM``) and is mapped onto MONAI's ViT:

* ``patch_embed.proj`` → ``patch_embedding.patch_embeddings``; ``attn.proj`` → ``attn.out_proj``;
  ``mlp.fc1``/``mlp.fc2`` → ``mlp.linear1``/``mlp.linear2``;
* the reference adds ``pos_embed[:, 0]`` to the CLS token and ``pos_embed[:, 1:]`` to the patches,
  MONAI adds position embeddings to the patches only, so the CLS slot is folded into ``cls_token``.
"""

from __future__ import annotations

import os
import pickle
import re

import torch

from monai_vecl.networks.vecl import VECLNetwork, build_vecl

PREFIX = "VECL_model."
_VIT_RENAMES = (
    (r"^patch_embed\.proj\.", "patch_embedding.patch_embeddings."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"blocks.\1.attn.out_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"blocks.\1.mlp.linear1."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"blocks.\1.mlp.linear2."),
)
_UNUSED_REFERENCE = re.compile(r"^fusion_module\.decoder\.layers\.\d+\.(self_attn|norm1)\.")
# Present in our model but without a counterpart: MONAI's unused cross-attention norms.
_UNUSED_OURS = re.compile(r"\.norm_cross_attn\.")


def convert_reference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a reference ``state_dict`` (with or without the ``VECL_model.`` prefix) to our key layout."""
    out: dict[str, torch.Tensor] = {}
    vit: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix(PREFIX)
        if _UNUSED_REFERENCE.match(key) or key.endswith("position_ids"):
            continue
        if key.startswith("img_encoder.model."):
            vit[key[len("img_encoder.model.") :]] = value
        else:
            out[key] = value
    if vit:
        pos = vit.pop("pos_embed")
        vit["cls_token"] = vit["cls_token"] + pos[:, :1]
        vit["patch_embedding.position_embeddings"] = pos[:, 1:]
        for key, value in vit.items():
            for pattern, repl in _VIT_RENAMES:
                key = re.sub(pattern, repl, key)
            out["img_encoder.model." + key] = value
    return out


def load_reference_checkpoint(
    path: str | os.PathLike, model: VECLNetwork | None = None, *, trusted: bool = False
) -> VECLNetwork:
    """Load the reference weights into ``model`` (default: a new ``paper`` network) and return it.

    Only tensors are unpickled unless ``trusted=True`` (Lightning checkpoints may pickle config
    objects; allow that only for files from a source you trust). Any key that does not map onto
    the model, or any model weight the checkpoint lacks, raises ``ValueError`` listing them.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: the checkpoint holds more than tensors; pass trusted=True if you trust its source ({err})"
        ) from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(k.startswith(PREFIX) for k in state):
        raise ValueError(f"{path}: no state_dict with keys starting with {PREFIX!r}: not a VECL reference checkpoint")
    converted = convert_reference_state_dict({k: v for k, v in state.items() if k.startswith(PREFIX)})
    model = model if model is not None else build_vecl("paper")
    # the reference normalises in its data transforms: the model keeps the statistics it is configured with
    converted |= {k: model.state_dict()[k] for k in ("intensity_mean", "intensity_std")}
    expected = {k for k in model.state_dict() if not _UNUSED_OURS.search(k)}
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit the model: missing {missing[:20]}, unexpected {unexpected[:20]}")
    model.load_state_dict(converted, strict=False)
    return model
