"""Training throughput: the ssl-viz Trainer step against a plain PyTorch loop, and batched vs per-image PIL augmentation.

    python -m bench.train_throughput [--encoder small-cnn --width 32 --batch 256 --device cpu --min-time 10]

Four ways to run the same SimCLR step (same encoder, projection head, batch, NT-Xent loss,
AdamW and augmentation policy) on Fashion-MNIST:

* ``trainer``: ``ssl_viz.train.Trainer.train_step`` (batched augmentation on the device, channels_last);
* ``plain``: the loop a user writes in a few lines (:func:`plain_step`), same batched augmentation, NCHW;
* ``plain+channels_last``: the same few lines with the model and batch in NHWC;
* ``PIL per-image``: the plain loop fed by a ``DataLoader`` whose workers run the
  torchvision v2 pipeline on PIL images, the usual tutorial set-up.

Prints images/s (training images, two views each) and the trainer's ratio to each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import rate  # noqa: E402
from ssl_viz.augment import BatchAugment, parse_policy, v2_transform  # noqa: E402
from ssl_viz.config import TrainConfig  # noqa: E402
from ssl_viz.data import ImageDataset, load_dataset  # noqa: E402
from ssl_viz.encoders import build_encoder, projection_head  # noqa: E402
from ssl_viz.train import Trainer, pick_device  # noqa: E402


def trainer_step_fn(cfg: TrainConfig, data: ImageDataset):
    """A Trainer without callbacks and its ``train_step`` as a no-argument function."""
    trainer = Trainer.from_config(cfg, "/tmp/ssl-viz-bench", callbacks=[], dataset=data)
    batches = trainer.batches()
    return trainer, lambda: trainer.train_step(next(batches))


def plain_step(data: ImageDataset, encoder_name: str, width: int, batch: int, device: torch.device,
               channels_last: bool = False, temperature: float = 0.2, lr: float = 2e-3, policy: str = TrainConfig.augment):
    """SimCLR in a few lines of plain PyTorch (Chen et al. 2020, eq. 1), for comparison."""
    encoder = build_encoder(encoder_name, data.channels, width)
    model = nn.Sequential(encoder, projection_head(encoder.feature_dim, 512, 128)).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    augment = BatchAugment(parse_policy(policy))
    images = data.images.to(device)

    def step() -> float:
        x = images[torch.randint(len(images), (batch,), device=device)].float().div(255).contiguous(memory_format=fmt)
        z = F.normalize(model(torch.cat([augment(x), augment(x)])), dim=1)           # [2B, D]
        sim = (z @ z.T / temperature).fill_diagonal_(float("-inf"))                  # [2B, 2B]
        target = (torch.arange(2 * batch, device=device) + batch) % (2 * batch)     # the other view
        loss = F.cross_entropy(sim, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


class PilPairs(torch.utils.data.Dataset):
    """Two torchvision-v2 views of each image, augmented one PIL image at a time."""

    def __init__(self, data: ImageDataset, policy: str = TrainConfig.augment) -> None:
        from PIL import Image

        mode = "L" if data.channels == 1 else "RGB"
        arrays = data.images.permute(0, 2, 3, 1).squeeze(-1).numpy() if data.channels == 1 else data.images.permute(0, 2, 3, 1).numpy()
        self.pils = [Image.fromarray(a, mode=mode) for a in arrays]
        self.transform = v2_transform(parse_policy(policy), data.image_size[0])

    def __len__(self) -> int:
        return len(self.pils)

    def __getitem__(self, i: int):
        img = self.pils[i]
        return self.transform(img), self.transform(img)


def pil_step(data: ImageDataset, encoder_name: str, width: int, batch: int, device: torch.device, workers: int):
    """The plain loop fed by a DataLoader of per-image PIL augmentation."""
    encoder = build_encoder(encoder_name, data.channels, width)
    model = nn.Sequential(encoder, projection_head(encoder.feature_dim, 512, 128)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(PilPairs(data), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    stream = iter(())

    def step() -> None:
        nonlocal stream
        try:
            v1, v2 = next(stream)
        except StopIteration:
            stream = iter(loader)
            v1, v2 = next(stream)
        z = F.normalize(model(torch.cat([v1, v2]).to(device, non_blocking=True)), dim=1)
        sim = (z @ z.T / 0.2).fill_diagonal_(float("-inf"))
        target = (torch.arange(2 * batch, device=device) + batch) % (2 * batch)
        loss = F.cross_entropy(sim, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(encoder: str, width: int, batch: int, device: torch.device, min_time: float, workers: int, dataset: str = "fashion-mnist",
            n_images: int = 20000, rounds: int = 2) -> dict[str, float]:
    """Images/s of each way of training (keys as in the module docstring): the best of ``rounds`` interleaved
    measurements, so that no variant gains from running later on a warmer machine."""
    data = load_dataset(dataset, "train").head(n_images, seed=0)
    cfg = TrainConfig(encoder=encoder, encoder_width=width, batch_size=batch, device=str(device), knn_every=0)
    steps = {
        "trainer": trainer_step_fn(cfg, data)[1],
        "plain": plain_step(data, encoder, width, batch, device),
        "plain+channels_last": plain_step(data, encoder, width, batch, device, channels_last=True),
        "PIL per-image": pil_step(data, encoder, width, batch, device, workers),
    }
    best = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, step in steps.items():
            best[name] = max(best[name], rate(step, batch, device, min_time / rounds))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default=TrainConfig.encoder)
    parser.add_argument("--width", type=int, default=TrainConfig.encoder_width)
    parser.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--min-time", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the PIL path")
    args = parser.parse_args()
    device = pick_device(args.device)
    print(f"SimCLR step, {args.encoder} width {args.width}, batch {args.batch}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    result = measure(args.encoder, args.width, args.batch, device, args.min_time, args.workers)
    for name, value in result.items():
        print(f"  {name:<22}{value:>10,.0f} img/s   trainer / this = {result['trainer'] / value:.2f}")


if __name__ == "__main__":
    main()
