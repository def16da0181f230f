"""t-SNE map of fusion features (VECL paper, Fig. 8).

For one class, every image with a known label is paired with the positive prompt
("There is X") and the negative prompt ("There is no X"). The fusion feature of a pair is the
fusion decoder output that enters the MLP head, averaged over the i2t and t2i directions (as the
inference logits are). A model that reads negation separates the four groups
(positive/negative image × positive/negative prompt); a negation-blind one overlays the prompts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai_vecl.inference.zero_shot import NEG_TEMPLATE, POS_TEMPLATE, encode_texts_chunked, eval_mode, model_device

GROUPS = (
    "positive image · positive prompt",
    "positive image · negative prompt",
    "negative image · positive prompt",
    "negative image · negative prompt",
)


@torch.no_grad()
def fusion_features(
    model: torch.nn.Module, images: torch.Tensor, texts: Sequence[str], chunk_size: int = 64
) -> torch.Tensor:
    """Fusion features [N, M, d] of every (image, text) pair, captured at the input of ``fusion_module.mlp_head``.

    ``VECLNetwork.fuse`` runs i2t (memory = images, [n, M, d]) then t2i (memory = texts, [M, n, d]).
    """
    captured: list[torch.Tensor] = []
    hook = model.fusion_module.mlp_head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    out = []
    try:
        with eval_mode(model):
            (text_feats,) = encode_texts_chunked(model, texts, chunk_size=len(texts))
            for start in range(0, images.shape[0], chunk_size):
                chunk = images[start : start + chunk_size]
                captured.clear()
                model.fuse(model.encode_images(chunk.to(model_device(model))), text_feats)
                n, m = chunk.shape[0], len(texts)
                if len(captured) != 2 or captured[0].shape[:2] != (n, m) or captured[1].shape[:2] != (m, n):
                    raise RuntimeError(
                        f"expected i2t [{n}, {m}, d] then t2i [{m}, {n}, d] fusion features, got "
                        f"{[tuple(c.shape) for c in captured]}"
                    )
                out.append(((captured[0] + captured[1].transpose(0, 1)) / 2).float().cpu())
    finally:
        hook.remove()
    return torch.cat(out)


def feature_map(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    class_name: str,
    path: str | os.PathLike,
    pos_template: str = POS_TEMPLATE,
    neg_template: str = NEG_TEMPLATE,
    seed: int = 0,
) -> dict[str, object]:
    """t-SNE of the fusion features of ``images`` (labels 1/0 for ``class_name``) with both prompts; writes a PNG.

    Returns per-group point counts and the centroid distance ratio between prompt groups and within them,
    a figure the paper shows only as a picture.
    """
    from sklearn.manifold import TSNE

    keep = (labels == 0) | (labels == 1)
    images, labels = images[torch.as_tensor(keep)], labels[keep].astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{class_name!r}: the feature map needs both positive and negative images")
    feats = fusion_features(model, images, [pos_template.format(class_name), neg_template.format(class_name)])
    points = feats.reshape(-1, feats.shape[-1]).numpy()  # row-major: image i → (pos prompt, neg prompt)
    prompt_neg = np.tile([0, 1], len(labels))
    image_neg = np.repeat(1 - labels, 2)
    group = image_neg * 2 + prompt_neg
    perplexity = float(min(30, max(2, (len(points) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    _plot(xy, group, class_name, Path(path))
    # prompt separation in feature space: distance between prompt centroids over mean within-prompt spread
    centroids = [points[prompt_neg == p].mean(0) for p in (0, 1)]
    spread = np.mean([np.linalg.norm(points[prompt_neg == p] - centroids[p], axis=1).mean() for p in (0, 1)])
    return {
        "counts": {GROUPS[g]: int((group == g).sum()) for g in range(4)},
        "prompt_separation": float(np.linalg.norm(centroids[0] - centroids[1]) / max(spread, 1e-12)),
    }


def _plot(xy: np.ndarray, group: np.ndarray, class_name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    styles = [("tab:red", "o"), ("tab:red", "x"), ("tab:blue", "o"), ("tab:blue", "x")]
    for g, (color, marker) in enumerate(styles):
        sel = group == g
        ax.scatter(xy[sel, 0], xy[sel, 1], c=color, marker=marker, s=18, label=f"{GROUPS[g]} ({sel.sum()})")
    ax.set(title=f"t-SNE of fusion features — {class_name}", xticks=[], yticks=[])
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
