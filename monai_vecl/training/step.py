"""The VECL training forward pass as one module, so DDP can wrap it.

Images and sentences are encoded on each rank; text features are gathered (with gradient) so each
rank fuses its own images against every sentence of the global batch (the fusion scores each
pair independently, so the rows split across ranks without overlap); the logit rows are then
gathered (with gradient) and every rank evaluates the loss on the full N_global × N_global batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from monai_vecl.training.distributed import gather_no_grad, gather_with_grad, map_tensors, pad_tokens_to_global_max


class VECLTrainStep(nn.Module):
    """``forward(images, texts, image_mh, sentence_mh) -> (loss, logits, terms)`` for a VECL network and loss.

    ``terms`` are the loss's named parts (detached), for logging; ``texts`` holds k sentences per image,
    image-major, when the loss is built with ``sentences_per_image=k``.
    """

    def __init__(self, network: nn.Module, loss_fn: nn.Module):
        super().__init__()
        self.network = network
        self.loss_fn = loss_fn

    def forward(self, images: torch.Tensor, texts: list[str], image_mh: torch.Tensor,
                sentence_mh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        device = images.device
        tokens = {k: v.to(device) for k, v in self.network.tokenize(list(texts)).items()}
        tokens = pad_tokens_to_global_max(tokens)
        img_feats = self.network.encode_images(images)
        txt_feats = map_tensors(gather_with_grad, self.network.encode_texts(tokens["input_ids"],
                                                                             tokens["attention_mask"]))
        out = self.network.fuse(img_feats, txt_feats)
        i2t, t2i = gather_with_grad(out.i2t), gather_with_grad(out.t2i)
        image_mh = gather_no_grad(image_mh.to(device))
        sentence_mh = gather_no_grad(sentence_mh.to(device))
        terms = self.loss_fn.terms(i2t.float(), t2i.float(), image_mh, sentence_mh)
        loss = sum(terms.values())
        return loss, (i2t.detach() + t2i.detach()) / 2, {k: v.detach() for k, v in terms.items()}


def unwrap(module: Any) -> nn.Module:
    """The network inside a (DDP-wrapped) :class:`VECLTrainStep`."""
    module = getattr(module, "module", module)
    return module.network
