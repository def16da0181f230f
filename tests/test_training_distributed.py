"""DDP with all-gathered features: 2 gloo processes give the loss and gradients of one process on the combined batch."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from monai_vecl.losses import VECLLoss
from monai_vecl.networks import TextFeatures, build_vecl
from monai_vecl.taxonomy import multi_hot_batch
from monai_vecl.training.distributed import gather_with_grad, map_tensors
from monai_vecl.training.step import VECLTrainStep

N_GLOBAL = 8
TEXTS = [
    "No effusion.", "Small left pleural effusion.", "Heart size is enlarged.", "No pneumothorax is seen.",
    "Mild pulmonary edema.", "Lungs are clear.", "Bibasilar atelectasis.", "There is a right lower lobe opacity.",
]
SENTENCE_LABELS = [["2-"], ["2+"], ["4+"], ["3-"], ["8+"], ["25"], ["1+"], ["5+"]]
IMAGE_LABELS = [["2-", "3-"], ["2+", "4+"], ["4+"], ["3-", "8-"], ["8+", "2+"], [], ["1+", "2-"], ["5+", "1+"]]


def make_network() -> nn.Module:
    """The small preset shrunk to a few thousand weights (no dropout), built from a config: no weight files.

    The ViT encoder and a trained text encoder: the gathers under test carry gradients into both encoders.
    (The ResNet's batch norm normalises per rank under DDP, as plain DDP does, so it would not give the
    single-process numbers.)"""
    torch.manual_seed(0)
    tiny_bert = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 32, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return build_vecl("small", image_encoder="vit", freeze_text=False, image_size=32, load_size=40, patch_size=16, vit_hidden_size=16, vit_mlp_dim=32,
                      vit_num_layers=1, vit_num_heads=2, text_config=tiny_bert, text_last_n_layers=2, d_model=16,
                      fusion_layers=1, fusion_heads=2, fusion_ffn_dim=32, fusion_dropout=0.0, head_dims=(16,))


def batch() -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
    images = torch.randn(N_GLOBAL, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return images, TEXTS, multi_hot_batch(IMAGE_LABELS), multi_hot_batch(SENTENCE_LABELS)


def loss_and_grads(step: nn.Module, network: nn.Module, images, texts, image_mh, sentence_mh):
    loss, logits, _ = step(images, texts, image_mh, sentence_mh)
    loss.backward()
    return loss.detach(), logits, {k: p.grad.clone() for k, p in network.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        network = make_network()
        step = nn.parallel.DistributedDataParallel(VECLTrainStep(network, VECLLoss("vecl")), find_unused_parameters=True)
        images, texts, image_mh, sentence_mh = batch()
        part = slice(rank * N_GLOBAL // world, (rank + 1) * N_GLOBAL // world)
        result = loss_and_grads(step, network, images[part], texts[part], image_mh[part], sentence_mh[part])
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_single_process_on_global_batch(tmp_path):
    network = make_network()
    loss, logits, grads = loss_and_grads(VECLTrainStep(network, VECLLoss("vecl")), network, *batch())
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    ddp_loss, ddp_logits, ddp_grads = torch.load(out)
    assert ddp_logits.shape == (N_GLOBAL, N_GLOBAL, 3)  # the loss saw the global batch
    torch.testing.assert_close(ddp_logits, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ddp_loss, loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ddp_grads.keys() and len(grads) > 20
    assert any(name.startswith("text_encoder") for name in grads)  # gradients crossed the text-feature gather
    for name in grads:
        torch.testing.assert_close(ddp_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_single_process_gather_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    feats = TextFeatures(torch.randn(2, 3, 4), None)
    mapped = map_tensors(lambda t: t * 2, feats)
    assert isinstance(mapped, TextFeatures) and mapped.padding_mask is None
    torch.testing.assert_close(mapped.memory, feats.memory * 2)


def _engine_step(manifest: str, rank: int, world: int) -> dict[str, torch.Tensor]:
    """One VECLTrainer iteration (SGD, lr 1: the update is the gradient) on the first global batch of 8."""
    from monai_vecl.training.dataset import SentenceSampling
    from monai_vecl.training.engines import VECLTrainer
    from monai_vecl.training.loaders import Augmentation, TrainLoader

    network = make_network()
    identity = Augmentation(image_size=32, load_size=32, flip_prob=0.0, rotate_deg=0.0, translate=0.0,
                            scale=(1.0, 1.0), brightness=(1.0, 1.0), contrast=(1.0, 1.0))
    loader = TrainLoader(SentenceSampling(manifest, split="train"), batch_size=N_GLOBAL // world, backend="monai",
                         aug=identity, num_workers=0, rank=rank, world_size=world)
    loader.data.items = loader.data.items[:N_GLOBAL]  # one global batch: one step
    trainer = VECLTrainer("cpu", 1, loader, network, torch.optim.SGD(network.parameters(), lr=1.0),
                          VECLLoss("vecl"), grad_clip=None)
    before = {k: v.detach().clone() for k, v in network.named_parameters()}
    trainer.run()
    assert trainer.state.iteration == 1
    return {k: before[k] - v.detach() for k, v in network.named_parameters() if not torch.equal(before[k], v)}


def _engine_worker(rank: int, world: int, port: int, manifest: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        update = _engine_step(manifest, rank, world)
        if rank == 0:
            torch.save(update, out)
    finally:
        dist.destroy_process_group()


def test_ddp_engine_step_equals_single_process(tmp_path):
    """The MONAI-engine trainer under 2 gloo processes makes the update of one process on the global batch."""
    from monai_vecl.data.phantom import generate_phantom

    manifest = str(generate_phantom(tmp_path / "phantom", n_images=24, seed=3, image_size=64, workers=1))
    single = _engine_step(manifest, 0, 1)
    out = tmp_path / "rank0.pt"
    mp.spawn(_engine_worker, args=(2, free_port(), manifest, str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    assert single.keys() == ddp.keys() and any(k.startswith("text_encoder") for k in single)
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=1e-6, msg=name)


def _auc_worker(rank: int, world: int, port: int, pred: torch.Tensor, label: torch.Tensor, out: str) -> None:
    from monai_vecl.inference.engine import ZeroShotAUC

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        metric = ZeroShotAUC(["a", "b"])
        part = slice(rank * 5, 5 + rank * 6)  # unequal shards: 5 and 6 images
        metric.update((pred[part], label[part]))
        result = metric.compute()  # a collective: every rank computes
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def test_validation_auc_gathers_unequal_shards(tmp_path):
    from monai_vecl.inference.engine import ZeroShotAUC

    g = torch.Generator().manual_seed(0)
    pred, label = torch.rand(11, 2, 2, generator=g), (torch.rand(11, 2, generator=g) > 0.5).float()
    label[0, 1] = float("nan")  # no label: left out of class b
    whole = ZeroShotAUC(["a", "b"])
    whole.update((pred, label))
    out = tmp_path / "auc.pt"
    mp.spawn(_auc_worker, args=(2, free_port(), pred, label, str(out)), nprocs=2, join=True)
    assert torch.load(out) == whole.compute()
