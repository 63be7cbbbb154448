"""Global negatives: two gloo processes on CPU, each with half a batch, gathering features for the
contrastive loss under DistributedDataParallel, give the loss and the gradients of one process on
the whole batch (repeated texts included, so positives span the two halves)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.losses import clip_loss, positives_from_texts
from models.training import gather_batches

KEYS = ["normal", "mass", "normal", "calcification", "mass", "normal", "distortion", "calcification"]


class Towers(nn.Module):
    """Two linear towers giving L2-normalized image and text embeddings."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image, self.text = nn.Linear(6, 4), nn.Linear(5, 4)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=generator), torch.randn(8, 5, generator=generator)


def _loss(model: nn.Module, images: torch.Tensor, texts: torch.Tensor, keys: list[str]) -> torch.Tensor:
    image, text = model(images, texts)
    (image, text), keys = gather_batches((image, text), keys)
    return clip_loss(image, text, 10.0, positives_from_texts(keys))


def _rank(rank: int, world: int, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = DistributedDataParallel(Towers())
    images, texts = _batch()
    part = slice(rank * 4, rank * 4 + 4)
    loss = _loss(model, images[part], texts[part], KEYS[part])
    loss.backward()
    if rank == 0:
        with open(out, "w") as stream:
            json.dump({"loss": loss.item(), "grads": {n: p.grad.tolist() for n, p in model.module.named_parameters()}},
                      stream)
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_loss_and_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    single = Towers()
    images, texts = _batch()
    expected = _loss(single, images, texts, KEYS)  # no process group: the batch as it is
    expected.backward()
    out = tmp_path / "rank0.json"
    mp.spawn(_rank, args=(2, str(tmp_path / "rendezvous"), str(out)), nprocs=2, join=True)
    found = json.loads(out.read_text())
    assert found["loss"] == pytest.approx(expected.item(), rel=1e-5)
    for name, parameter in single.named_parameters():
        assert torch.allclose(torch.tensor(found["grads"][name]), parameter.grad, atol=1e-6), name
    local = Towers()  # without the gather, each half alone: a different (easier) loss
    assert clip_loss(*local(images[:4], texts[:4]), 10.0, positives_from_texts(KEYS[:4])).item() != pytest.approx(
        expected.item(), rel=1e-3)
