"""Manifest records → training samples: one image, one randomly drawn report sentence, signed labels.

VECL samples one sentence of the image's report per image and step, capped at 97 characters
(VECL reference code, docs/method.md §Training samples). The image's label set is the union of the labels of *all* its
report's sentences, so a drawn sentence is judged against everything the report says.

Rule for images without a labeled sentence (no sentences, or ``sentence_labels`` missing): they
carry nothing to contrast, so they are left out of training, counted per reason in
:class:`SampleCounts` and reported in the log and MLflow; ``strict=True`` raises instead.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from monai_vecl.data.manifest import Record, image_path, read_manifest
from monai_vecl.reports import MAX_SENTENCE_CHARS, cap_sentence
from monai_vecl.taxonomy import multi_hot


@dataclass
class SampleCounts:
    """How many manifest records of a split were used, and why the others were left out."""

    used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    @property
    def total(self) -> int:
        return self.used + sum(self.skipped.values())


@dataclass(frozen=True)
class TrainItem:
    """A usable training image: path, its capped sentences with their labels, its image label set."""

    path: Path
    sentences: tuple[str, ...]
    sentence_mh: torch.Tensor  # [n_sentences, 49]
    image_mh: torch.Tensor  # [49]


def skip_reason(record: Record) -> str | None:
    """Why a record cannot be trained on (``None`` when it can)."""
    if not record.sentences:
        return "no_sentences"
    if record.sentence_labels is None:
        return "unlabeled"
    return None


class SentenceSampling:
    """Training samples of one manifest split with a deterministic per-(epoch, image) sentence draw.

    The draw depends only on ``(seed, epoch, index)``, so it is identical across data-loader workers,
    distributed ranks and a resumed run.

    Args:
        manifest: path of a ``manifest.jsonl``.
        split: split to read (``"train"``).
        max_chars: sentence cap applied when sampling.
        seed: base seed of the sentence draw.
        strict: raise on a record without a labeled sentence instead of counting and skipping it.
    """

    def __init__(
        self,
        manifest: str | os.PathLike,
        split: str = "train",
        max_chars: int = MAX_SENTENCE_CHARS,
        seed: int = 0,
        strict: bool = False,
    ):
        self.manifest = Path(manifest)
        self.seed = seed
        self.counts = SampleCounts()
        self.items: list[TrainItem] = []
        for record in read_manifest(self.manifest, split=split):
            reason = skip_reason(record)
            if reason is not None:
                if strict:
                    raise ValueError(f"{self.manifest}: record {record.image!r} has no labeled sentence ({reason})")
                self.counts.skip(reason)
                continue
            self.items.append(
                TrainItem(
                    path=image_path(record, self.manifest),
                    sentences=tuple(cap_sentence(s, max_chars) for s in record.sentences),
                    sentence_mh=torch.stack([multi_hot(labels) for labels in record.sentence_labels]),
                    image_mh=multi_hot(record.image_labels),
                )
            )
        self.counts.used = len(self.items)
        if not self.items:
            raise ValueError(f"{self.manifest}: no usable '{split}' records (left out: {self.counts.skipped})")

    def __len__(self) -> int:
        return len(self.items)

    def draw(self, index: int, epoch: int, k: int = 1) -> list[int]:
        """Indices of the ``k`` sentences of image ``index`` used in ``epoch`` (distinct while the report has enough)."""
        key = hashlib.blake2b(f"{self.seed}:{epoch}:{index}".encode(), digest_size=8).digest()
        rng, n = random.Random(key), len(self.items[index].sentences)
        if k == 1:
            return [rng.randrange(n)]
        picks = rng.sample(range(n), min(k, n))
        return picks + [rng.randrange(n) for _ in range(k - len(picks))]

    def text_and_labels(self, indices: Sequence[int], epoch: int, sentences_per_image: int = 1) -> dict[str, object]:
        """Sentences (image-major, ``sentences_per_image`` per image) and multi-hot labels for a batch of images."""
        picks = [(i, j) for i in indices for j in self.draw(i, epoch, sentences_per_image)]
        return {
            "text": [self.items[i].sentences[j] for i, j in picks],
            "sentence_mh": torch.stack([self.items[i].sentence_mh[j] for i, j in picks]),
            "image_mh": torch.stack([self.items[i].image_mh for i in indices]),
        }

    def epoch_order(self, epoch: int) -> list[int]:
        """Shuffled image order of an epoch (same on every rank for the same seed)."""
        order = list(range(len(self.items)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order


def resolve_manifest(manifest: str | os.PathLike | None, phantom_dir: str | os.PathLike, phantom_images: int = 600,
                     phantom_seed: int = 0, phantom_size: int = 256) -> Path:
    """The data set to train on: ``manifest`` when given, else the phantom data set in ``phantom_dir``.

    The phantom is generated once (:func:`monai_vecl.data.phantom.generate_phantom` returns a complete
    data set with the same parameters untouched); under DDP rank 0 generates it while the others wait.
    """
    if manifest is not None:
        path = Path(manifest)
        if not path.is_file():
            raise FileNotFoundError(f"training manifest {path} does not exist")
        return path
    import torch.distributed as dist

    from monai_vecl.data.phantom import generate_phantom

    ddp = dist.is_available() and dist.is_initialized()
    if not ddp or dist.get_rank() == 0:
        generate_phantom(phantom_dir, n_images=phantom_images, seed=phantom_seed, image_size=phantom_size)
    if ddp:
        dist.barrier()
    return Path(phantom_dir) / "manifest.jsonl"
