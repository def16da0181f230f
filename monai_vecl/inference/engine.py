"""Zero-shot scoring on MONAI engines: the image transform, the dataset, the inferer and the AUC metric.

A ``monai.engines.SupervisedEvaluator`` with :class:`ZeroShotInferer` scores images against the positive
and negative prompts of a class list; :class:`ZeroShotAUC` turns its outputs into the masked macro ROC AUC
(:func:`monai_vecl.metrics.masked_macro_auc`) in POS and PNC modes, gathering the shards of every rank
under DDP. Training validation and the bundle's inference workflow use these same pieces.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric
from monai.data import Dataset
from monai.inferers import Inferer
from monai.transforms import MapTransform

from monai_vecl import metrics
from monai_vecl.data.manifest import class_labels, image_path, read_manifest
from monai_vecl.data.preprocess import preprocess_gray, read_gray
from monai_vecl.inference.zero_shot import NEG_TEMPLATE, POS_TEMPLATE, ZeroShotClassifier, pnc


#: The item key where :class:`LoadGrayd` says why an image could not be read (``""`` when it could).
ERROR_KEY = "error"


class LoadGrayd(MapTransform):
    """Image file path → network input [3, S, S] in [0, 1]: :func:`read_gray` then :func:`preprocess_gray`,
    exactly the evaluation and deployment preprocessing.

    With ``error_key``, an unreadable image (missing, corrupt, not grayscale) does not stop a run: it becomes a
    zero image and ``data[error_key]`` says why (``""`` for a readable one), so that the caller can count and
    report it; the file's path in the reason is replaced by ``<file>`` so that equal reasons count together.
    """

    def __init__(self, keys: str | Sequence[str], image_size: int, load_size: int, error_key: str | None = None):
        super().__init__(keys)
        self.image_size, self.load_size, self.error_key = image_size, load_size, error_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        if self.error_key is not None:
            out[self.error_key] = ""
        for key in self.key_iterator(out):
            path = out[key]
            try:
                out[key] = preprocess_gray(read_gray(path), self.image_size, self.load_size)
            except (OSError, ValueError) as err:
                if self.error_key is None:
                    raise
                out[key] = torch.zeros(3, self.image_size, self.image_size)
                out[self.error_key] = f"{type(err).__name__}: {err}".replace(str(path), "<file>")
        return out


def labeled_dataset(manifest: str | os.PathLike, class_names: Sequence[str] | None, split: str,
                    image_size: int, load_size: int, max_images: int | None = None,
                    error_key: str | None = None) -> Dataset:
    """A MONAI ``Dataset`` of the ``split`` records with ground truth for at least one of ``class_names``:
    ``image`` [3, S, S] (:class:`LoadGrayd`, with ``error_key`` marking unreadable images), ``label`` [C] (1/0;
    NaN or -1 where a record has no usable label for a class) and ``index``, the record's place in
    ``dataset.records``. ``class_names`` ``None`` takes every finding key of the split; ``dataset.class_names`` holds
    the resolved list and ``dataset.left_out`` the split's records without ground truth for any of them (the caller
    counts them). ``max_images=0`` gives an empty dataset (scoring switched off)."""
    if max_images == 0:  # scoring switched off (e.g. train_fit_images: 0): nothing to read
        empty = Dataset([])
        empty.class_names, empty.records, empty.left_out = tuple(class_names or ()), [], []
        return empty
    split_records = read_manifest(manifest, split=split)
    names = (tuple(class_names) if class_names is not None
             else tuple(sorted({k for r in split_records for k in r.findings or {}})))
    split_labels = class_labels(split_records, names)
    has_truth = ~np.isnan(split_labels).all(axis=1)
    records = [r for r, keep in zip(split_records, has_truth, strict=True) if keep][:max_images]
    if not records:
        raise ValueError(f"{manifest}: no '{split}' records with ground truth for {list(names)} to score")
    labels = split_labels[has_truth][:max_images]
    unknown = [n for c, n in enumerate(names) if np.isnan(labels[:, c]).all()]
    if unknown:  # a misspelt class name would otherwise score nothing and look like a missing figure
        raise ValueError(f"{manifest}: no '{split}' record has ground truth for {unknown}")
    items = [{"image": str(image_path(r, manifest)), "label": torch.as_tensor(labels[i], dtype=torch.float32),
              "index": i} for i, r in enumerate(records)]
    dataset = Dataset(items, transform=LoadGrayd("image", image_size, load_size, error_key))
    dataset.class_names, dataset.records = names, records
    dataset.left_out = [r for r, keep in zip(split_records, has_truth, strict=True) if not keep]
    return dataset


class ZeroShotInferer(Inferer):
    """``inferer(images, network)`` → entail probabilities [N, 2, C]: row 0 for "There is X", row 1 for
    "There is no X". The prompt features are encoded once per state of the weights: a training step or a
    weights load changes a parameter in place, which bumps its version, and the prompts are encoded again."""

    def __init__(self, class_names: Sequence[str], pos_template: str = POS_TEMPLATE, neg_template: str = NEG_TEMPLATE,
                 chunk_size: int = 64):
        super().__init__()
        self.class_names = tuple(class_names)
        self.pos_template, self.neg_template, self.chunk_size = pos_template, neg_template, chunk_size
        self._classifier: ZeroShotClassifier | None = None
        self._weights_state: tuple | None = None

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        state = (id(network), tuple(p._version for p in network.parameters()))
        if self._classifier is None or state != self._weights_state:
            self._classifier = ZeroShotClassifier(network, self.class_names, self.pos_template, self.neg_template,
                                                  self.chunk_size)
            self._weights_state = state
        p_pos, p_neg = self._classifier.entail(inputs)
        return torch.stack([p_pos, p_neg], dim=1)


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over the ranks (shards may differ in length); ``x`` itself without DDP."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    from monai.utils import evenly_divisible_all_gather

    return evenly_divisible_all_gather(x, concat=True)


class ZeroShotAUC(Metric):
    """Masked macro ROC AUC of zero-shot scores: ``<prefix>_pnc_auc``, ``<prefix>_pos_auc`` and the per-class
    PNC AUC ``<prefix>_pnc_auc.<class>``, computed once over the images of every rank.

    Attach with name ``<prefix>_pnc_auc``; the other figures go into ``engine.state.metrics`` beside it.
    """

    def __init__(self, class_names: Sequence[str], prefix: str = "val",
                 output_transform: Callable = lambda output: (output["pred"], output["label"]), device: Any = "cpu"):
        self.class_names, self.prefix = tuple(class_names), prefix
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._pred: list[torch.Tensor] = []
        self._label: list[torch.Tensor] = []

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        pred, label = output
        self._pred.append(pred.detach().float().cpu())
        self._label.append(label.detach().float().cpu())

    def compute(self) -> dict[str, float]:
        pred, label = _all_gather(torch.cat(self._pred)), _all_gather(torch.cat(self._label))
        p_pos, p_neg, truth = pred[:, 0].numpy(), pred[:, 1].numpy(), label.numpy()
        pnc_auc, per_class = metrics.masked_macro_auc(truth, pnc(torch.from_numpy(p_pos), torch.from_numpy(p_neg))
                                                      .numpy(), self.class_names)
        pos_auc, _ = metrics.masked_macro_auc(truth, p_pos, self.class_names)
        out = {f"{self.prefix}_pnc_auc": pnc_auc, f"{self.prefix}_pos_auc": pos_auc}
        out.update({f"{self.prefix}_pnc_auc.{name.replace(' ', '_')}": v for name, v in per_class.items()})
        return out

    def completed(self, engine: Any, name: str) -> None:
        result = self.compute()
        engine.state.metrics.update(result)
        engine.state.metrics[name] = result[f"{self.prefix}_pnc_auc"]
