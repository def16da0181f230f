"""Zero-shot grounding maps: where in the image a VECL network finds support for a finding prompt.

Two methods, one API (:class:`Grounder`), used by the evaluation and the deployment alike
(docs/grounding.md):

* ``attention`` — the i2t cross-attention of the fusion: the prompt's sentence feature is the
  query, the image tokens are the memory. The weights over the image tokens (the global token
  dropped) are averaged over heads and over the layers chosen by ``layers`` (all, or the last).
* ``gradcam`` / ``gradcampp`` — MONAI's :class:`~monai.visualize.GradCAM` / ``GradCAMpp`` of a
  score (the zero-shot PNC or POS score, supplied by the caller as ``score_fn``) with respect to
  the image tokens, the fusion's memory: the last image-token layer for any image encoder.

Image tokens come from ``network.encode_images`` as [N, 1 + T, d]: the global token first, then T
tokens row-major on a grid (``network.image_token_grid`` if the network has it, else a square
grid). Maps are bilinearly resized to the model input and scaled to [0, 1] per image and prompt;
:func:`to_source_frame` undoes the evaluation preprocessing so they lie over the original image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from monai_vecl.config import check_bool, check_fields
from monai_vecl.data.preprocess import center_crop, resize_longest_and_pad

if TYPE_CHECKING:  # an annotation only: the deploy app imports this module without the network code
    from monai_vecl.networks import TextFeatures

METHODS = ("attention", "gradcam", "gradcampp")
LAYERS = ("all", "last")
_EPS = 1e-12

#: image tokens [N, 1 + T, d] → differentiable scores [N, C], one column per grounded prompt.
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GroundingConfig:
    """Grounding options (the ``deploy.grounding`` section of ``deploy/config.yaml``, the evaluation's arguments)."""

    enabled: bool = True
    method: str = "attention"
    layers: str = "all"

    def __post_init__(self) -> None:
        check_bool("grounding.enabled", self.enabled)
        if self.method not in METHODS:
            raise ValueError(f"grounding.method must be one of {METHODS}, got {self.method!r}")
        if self.layers not in LAYERS:
            raise ValueError(f"grounding.layers must be one of {LAYERS}, got {self.layers!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> GroundingConfig:
        data = dict(data or {})
        check_fields(cls, data)
        return cls(**data)


def token_grid(network: nn.Module, n_tokens: int) -> tuple[int, int]:
    """(h, w) of the image-token grid: ``network.image_token_grid`` if defined, else the square of side sqrt(T)."""
    grid = getattr(network, "image_token_grid", None)
    if grid is not None:
        h, w = grid
    else:
        h = w = math.isqrt(n_tokens)
    if h * w != n_tokens:
        raise ValueError(f"{n_tokens} image tokens do not fill a {h}×{w} grid; set image_token_grid on the network")
    return h, w


def attention_maps(
    network: nn.Module, image_tokens: torch.Tensor, queries: torch.Tensor, layers: str = "all"
) -> torch.Tensor:
    """i2t cross-attention of each query (sentence feature [C, d]) over the image tokens → [N, C, h, w]."""
    weights: list[torch.Tensor] = []
    network.fusion_module(image_tokens, queries, attention=weights)
    if not weights:
        raise RuntimeError("the fusion recorded no attention weights")
    chosen = weights if layers == "all" else weights[-1:]
    attn = torch.stack(chosen).float().mean(dim=(0, 2))[..., 1:]  # layers, heads → [N, C, T]; global token dropped
    h, w = token_grid(network, attn.shape[-1])
    return attn.reshape(*attn.shape[:2], h, w)


class _TokenGrid(nn.Module):
    """Identity on the image tokens, seen as a feature map [N, d, h, w]: the layer Grad-CAM hooks."""

    def __init__(self, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)


class _TokenScore(nn.Module):
    """Scores [N, C] from image tokens, through :class:`_TokenGrid` so MONAI's CAM classes can hook it."""

    def __init__(self, score_fn: ScoreFn, grid: tuple[int, int]):
        super().__init__()
        self.score_fn = score_fn
        self.token_grid = _TokenGrid(grid)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        grid = self.token_grid(tokens)
        return self.score_fn(torch.cat([tokens[:, :1], grid.flatten(2).transpose(1, 2)], dim=1))


@contextmanager
def _frozen(network: nn.Module) -> Iterator[None]:
    """No parameter gradients inside the block: Grad-CAM needs them only for the tokens."""
    flags = [(p, p.requires_grad) for p in network.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def gradcam_maps(
    network: nn.Module, image_tokens: torch.Tensor, score_fn: ScoreFn, n_scores: int, method: str = "gradcam"
) -> torch.Tensor:
    """Grad-CAM (or Grad-CAM++) of each of the ``n_scores`` columns of ``score_fn`` on the image tokens: [N, C, h, w]."""
    from monai.visualize import GradCAM, GradCAMpp

    grid = token_grid(network, image_tokens.shape[1] - 1)
    cam_class = GradCAMpp if method == "gradcampp" else GradCAM
    cam = cam_class(_TokenScore(score_fn, grid), target_layers="token_grid")
    # MONAI's GradCAMpp multiplies the score [N] into the gradients [N, d, h, w] by broadcasting along the
    # last axis, which is only right for N = 1: it gets one image at a time.
    batches = image_tokens.split(1) if method == "gradcampp" else (image_tokens,)
    maps = []
    with _frozen(network), torch.enable_grad():
        for batch in batches:
            tokens = batch.detach().requires_grad_(True)
            maps.append(torch.cat([cam.compute_map(tokens, class_idx=c) for c in range(n_scores)], dim=1))
    return torch.cat(maps).detach().float()


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale every map [..., H, W] to [0, 1] (min → 0, max → 1; a constant map → 0)."""
    flat = maps.flatten(-2)
    lo, hi = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(_EPS)).reshape(maps.shape)


def to_source_frame(maps: torch.Tensor, shape: tuple[int, int], load_size: int) -> torch.Tensor:
    """Maps [..., S, S] in the model-input frame → [..., H, W] over the original image (zero outside the crop).

    Inverts :func:`monai_vecl.data.preprocess.preprocess_gray`: centre crop S of the ``load_size``
    square, which holds the image scaled to ``load_size`` on its longest side and zero-padded.
    """
    h, w = shape
    size = maps.shape[-1]
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, size, size).float()
    square = torch.zeros(flat.shape[0], load_size, load_size)
    top = left = (load_size - size) // 2
    square[:, top : top + size, left : left + size] = flat
    scale = load_size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    pad_top, pad_left = (load_size - nh) // 2, (load_size - nw) // 2
    inner = square[:, pad_top : pad_top + nh, pad_left : pad_left + nw]
    out = F.interpolate(inner[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return out.reshape(*lead, h, w)


def to_model_frame(image: np.ndarray | torch.Tensor, image_size: int, load_size: int) -> torch.Tensor:
    """A 2-D array [H, W] (an image or a mask) in the geometry of the model input [S, S] (no normalisation)."""
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))
    return center_crop(resize_longest_and_pad(t, load_size), image_size)


class Grounder:
    """Grounding maps of preprocessed images for a fixed list of prompts.

    Args:
        network: a VECL network (``encode_images``, ``fusion_module``, ``image_size``).
        prompts: the encoded prompts, one :class:`~monai_vecl.networks.TextFeatures` per chunk,
            concatenated in order (one map per prompt).
        score_fn: for the gradient methods, image tokens [N, 1 + T, d] → scores [N, C]
            (differentiable), one column per prompt; the evaluation passes the zero-shot score.
        config: method and layers.
    """

    def __init__(
        self,
        network: nn.Module,
        prompts: Sequence[TextFeatures],
        score_fn: ScoreFn | None = None,
        config: GroundingConfig = GroundingConfig(),
    ):
        if config.method != "attention" and score_fn is None:
            raise ValueError(f"grounding method {config.method!r} needs a score_fn")
        self.network = network
        self.queries = torch.cat([p.sentence for p in prompts])
        self.score_fn = score_fn
        self.config = config

    @property
    def n_prompts(self) -> int:
        return self.queries.shape[0]

    def maps(self, images: torch.Tensor, prompts: Sequence[int] | None = None) -> torch.Tensor:
        """Maps [N, C, S, S] in [0, 1] (CPU float) for preprocessed images [N, 3, S, S].

        ``prompts``: indices of the prompts to map (default all), e.g. only the findings called present.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, S, S], got {tuple(images.shape)}")
        chosen = list(range(self.n_prompts)) if prompts is None else list(prompts)
        param = next(self.network.parameters())
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad():
                tokens = self.network.encode_images(images.to(param.device))
                if self.config.method == "attention":
                    queries = self.queries[chosen].to(param.device)
                    coarse = attention_maps(self.network, tokens, queries, self.config.layers)
            if self.config.method != "attention":
                score_fn = self.score_fn
                coarse = gradcam_maps(self.network, tokens, lambda t: score_fn(t)[:, chosen], len(chosen),
                                      self.config.method)
        finally:
            self.network.train(was_training)
        fine = F.interpolate(coarse, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return normalize_maps(fine).cpu()
