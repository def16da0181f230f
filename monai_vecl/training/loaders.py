"""Training image loaders: a DALI pipeline and a MONAI-transforms path with the same semantics
(docs/method.md §Preprocessing).

Both turn 8-bit grayscale image files into model input [B, 3, S, S] float32:
grayscale → longest side ``load_size`` keeping aspect → centred zero-pad to a square →
(training) random crop ``image_size``, horizontal flip p=0.3, random affine (±30°, translate 0.1,
scale 0.9–1.1), brightness and contrast 0.8–1.2 (contrast around the image mean), clip to [0, 1] /
(evaluation) centre crop → repeat to 3 channels, intensities in [0, 1] (the network normalises them).
The values and the order follow the VECL reference code (WVeLong/VECL, torchvision transforms).

DALI runs on the CPU with ``device_id=None`` and decodes/augments on the GPU when one is present;
the MONAI path runs in ``torch.utils.data`` workers. ``backend="auto"`` takes DALI when it imports.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from monai_vecl.config import check_arguments, check_dataclass, check_min
from monai_vecl.data.preprocess import read_gray
from monai_vecl.training.dataset import SentenceSampling
from monai_vecl.training.distributed import rank_and_world

BACKENDS = ("auto", "dali", "monai")


@dataclass(frozen=True)
class Augmentation:
    """Image geometry and augmentation ranges (reference values by default; set from the bundle YAML)."""

    image_size: int = 224
    load_size: int = 256
    flip_prob: float = 0.3
    rotate_deg: float = 30.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: tuple[float, float] = (0.8, 1.2)
    contrast: tuple[float, float] = (0.8, 1.2)

    def __post_init__(self) -> None:
        check_dataclass(self)  # YAML and command-line values: '0.3' or 'false' strings fail here, naming the key


def dali_available() -> bool:
    """True when NVIDIA DALI imports."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """``auto`` → ``dali`` when DALI is installed, else ``monai``; an explicit choice is checked."""
    if backend not in BACKENDS:
        raise ValueError(f"loader backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "dali" if dali_available() else "monai"
    if backend == "dali" and not dali_available():
        raise ImportError("loader backend 'dali' asked for but nvidia-dali is not installed (pip install nvidia-dali-cuda130)")
    return backend


# ---------------------------------------------------------------- MONAI path


def monai_transform(aug: Augmentation, train: bool):
    """MONAI dictionary transforms on key ``image`` (a file path) → [3, S, S] float32."""
    from monai import transforms as T

    size = (aug.image_size, aug.image_size)
    steps = [
        T.Lambdad("image", lambda p: read_gray(p)[None]),
        T.Resized("image", spatial_size=aug.load_size, size_mode="longest", mode="bilinear", anti_aliasing=True),
        T.SpatialPadd("image", spatial_size=(aug.load_size, aug.load_size), method="symmetric"),
    ]
    if train:
        steps += [
            T.RandSpatialCropd("image", roi_size=size, random_size=False),
            T.RandFlipd("image", prob=aug.flip_prob, spatial_axis=1),
            T.RandAffined(
                "image",
                prob=1.0,
                rotate_range=(math.radians(aug.rotate_deg),),
                translate_range=(aug.translate * aug.image_size,) * 2,
                scale_range=((aug.scale[0] - 1, aug.scale[1] - 1),) * 2,
                padding_mode="zeros",
                mode="bilinear",
            ),
            T.RandScaleIntensityd("image", factors=(aug.brightness[0] - 1, aug.brightness[1] - 1), prob=1.0),
            T.RandScaleIntensityFixedMeand("image", factors=(aug.contrast[0] - 1, aug.contrast[1] - 1), prob=1.0),
            T.ScaleIntensityRanged("image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        ]
    else:
        steps.append(T.CenterSpatialCropd("image", roi_size=size))
    steps += [
        T.RepeatChanneld("image", repeats=3),
        T.ToTensord("image", dtype=torch.float32, track_meta=False),
    ]
    return T.Compose(steps)


class MonaiImages:
    """Loads batches of image files with MONAI transforms in ``num_workers`` worker processes."""

    def __init__(self, aug: Augmentation, train: bool, num_workers: int = 0, seed: int = 0):
        self.transform = monai_transform(aug, train)
        self.num_workers = num_workers
        self.seed = seed

    def batches(self, batches: Sequence[Sequence[str | Path]], epoch: int = 0) -> Iterator[torch.Tensor]:
        """Yield one [B, 3, S, S] tensor per list of paths, in order."""
        from monai.data import DataLoader, Dataset

        paths = [p for batch in batches for p in batch]
        bounds = np.cumsum([0] + [len(b) for b in batches])
        # MONAI's DataLoader seeds the transforms (and each worker) from this generator: new draws every epoch.
        loader = DataLoader(
            Dataset([{"image": str(p)} for p in paths], transform=self.transform),
            batch_sampler=[list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])],
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed * 1000 + epoch),
        )
        for batch in loader:
            yield torch.as_tensor(batch["image"])


# ---------------------------------------------------------------- DALI path


def _dali_graph(encoded, aug: Augmentation, train: bool, gpu: bool):
    """DALI operator graph from encoded image bytes to [3, S, S] float32 samples in [0, 1]."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.GRAY)
    images = fn.resize(images, resize_longer=aug.load_size, interp_type=types.INTERP_LINEAR, antialias=True)
    images = fn.cast(images, dtype=types.FLOAT) / 255.0
    # Centred crop larger than the image pads with zeros: the square canvas.
    images = fn.crop(images, crop=(aug.load_size, aug.load_size), out_of_bounds_policy="pad", fill_values=0.0)
    size = aug.image_size
    if train:
        images = fn.crop(
            images,
            crop=(size, size),
            crop_pos_x=fn.random.uniform(range=(0.0, 1.0)),
            crop_pos_y=fn.random.uniform(range=(0.0, 1.0)),
        )
        images = fn.flip(images, horizontal=fn.random.coin_flip(probability=aug.flip_prob))
        centre = [size / 2, size / 2]
        shift = aug.translate * size
        matrix = fn.transforms.scale(scale=fn.stack(*[fn.random.uniform(range=aug.scale)] * 2), center=centre)
        matrix = fn.transforms.rotation(matrix, angle=fn.random.uniform(range=(-aug.rotate_deg, aug.rotate_deg)),
                                        center=centre)
        matrix = fn.transforms.translation(matrix, offset=fn.random.uniform(range=(-shift, shift), shape=2))
        images = fn.warp_affine(images, matrix=matrix, inverse_map=False, fill_value=0.0,
                                interp_type=types.INTERP_LINEAR)
        images = images * fn.random.uniform(range=aug.brightness)
        mean = fn.reductions.mean(images)
        images = (images - mean) * fn.random.uniform(range=aug.contrast) + mean
        images = dmath.clamp(images, 0.0, 1.0)
    else:
        images = fn.crop(images, crop=(size, size))
    images = fn.transpose(images, perm=[2, 0, 1])
    return fn.cat(images, images, images, axis=0)


class DaliImages:
    """Loads batches of image files with a DALI pipeline (CPU with ``device_id=None``, GPU when present)."""

    def __init__(self, aug: Augmentation, train: bool, batch_size: int, num_threads: int = 2, seed: int = 0,
                 device_id: int | None = None):
        self.aug, self.train, self.batch_size = aug, train, batch_size
        self.num_threads, self.seed = num_threads, seed
        self.device_id = device_id

    def batches(self, batches: Sequence[Sequence[str | Path]], epoch: int = 0) -> Iterator[torch.Tensor]:
        """Yield one [B, 3, S, S] tensor per list of paths, in order."""
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        if not batches:
            return
        if max(len(b) for b in batches) > self.batch_size:
            raise ValueError(f"a batch is larger than the pipeline's batch_size {self.batch_size}")
        pending = list(batches)

        def source(info):
            if info.iteration >= len(pending):
                raise StopIteration
            return [np.fromfile(p, dtype=np.uint8) for p in pending[info.iteration]]

        gpu = self.device_id is not None

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                      seed=self.seed * 1000 + epoch, prefetch_queue_depth=2)
        def pipe():
            encoded = fn.external_source(source=source, batch=True, batch_info=True, dtype=types.UINT8)
            return _dali_graph(encoded, self.aug, self.train, gpu)

        pipeline = pipe()
        pipeline.build()
        for out in DALIGenericIterator(pipeline, ["image"], auto_reset=False):
            yield out[0]["image"]


def build_images(backend: str, aug: Augmentation, train: bool, batch_size: int, num_workers: int = 2,
                 seed: int = 0) -> DaliImages | MonaiImages:
    """Image loader of the chosen backend; DALI uses the current CUDA device when there is one."""
    backend = resolve_backend(backend)
    if backend == "dali":
        device_id = torch.cuda.current_device() if torch.cuda.is_available() else None
        return DaliImages(aug, train, batch_size, num_threads=max(1, num_workers), seed=seed, device_id=device_id)
    return MonaiImages(aug, train, num_workers=num_workers, seed=seed)


class TrainLoader:
    """Batches of one training epoch: images, one sampled sentence per image and the signed labels.

    The epoch order is shared by all ranks; rank ``r`` of ``world_size`` takes the ``r``-th slice of every
    global batch, so gathering features in rank order restores the global batch. The last incomplete
    global batch is dropped (contrastive batches need a fixed size).

    Args:
        data: the sampled training split.
        batch_size: images per rank and step.
        backend: ``auto``, ``dali`` or ``monai``.
        aug: geometry and augmentation.
        num_workers: DALI threads or MONAI worker processes.
        rank / world_size: this process's slice; ``None`` takes them from the initialised process group.
        sentences_per_image: sentences drawn per image and step (the loss must be built with the same k).
    """

    def __init__(self, data: SentenceSampling, batch_size: int, backend: str = "auto",
                 aug: Augmentation | None = None, num_workers: int = 2, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None, sentences_per_image: int = 1):
        check_arguments(TrainLoader.__init__, locals())
        check_min("TrainLoader.batch_size", batch_size, 1)
        check_min("TrainLoader.num_workers", num_workers, 0)
        check_min("TrainLoader.sentences_per_image", sentences_per_image, 1)
        self.data, self.batch_size = data, batch_size
        self.sentences_per_image = sentences_per_image
        group_rank, group_size = rank_and_world()
        self.rank = group_rank if rank is None else rank
        self.world_size = group_size if world_size is None else world_size
        self.backend = resolve_backend(backend)
        self.images = build_images(self.backend, aug or Augmentation(), True, batch_size, num_workers,
                                   seed + self.rank)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(data)} training images cannot fill one global batch of "
                             f"{batch_size} x {self.world_size} ranks")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data) // (self.batch_size * self.world_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        """Yield the batches of ``epoch`` from ``start_step`` on (resume skips the steps already done)."""
        order = self.data.epoch_order(epoch)
        global_batch = self.batch_size * self.world_size
        index_batches = []
        for step in range(start_step, self.steps_per_epoch):
            start = step * global_batch + self.rank * self.batch_size
            index_batches.append(order[start : start + self.batch_size])
        paths = [[self.data.items[i].path for i in batch] for batch in index_batches]
        for indices, images in zip(index_batches, self.images.batches(paths, epoch)):
            yield {"image": images, "index": torch.tensor(indices), **self.data.text_and_labels(indices, epoch, self.sentences_per_image)}
