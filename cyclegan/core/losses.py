"""Adversarial losses and the history pool of generated images."""
from __future__ import annotations

import torch
from torch import nn


class GANLoss(nn.Module):
    """lsgan: MSE to 1/0 (the paper's choice); vanilla: cross-entropy; wgangp: -/+ mean critic value."""

    def __init__(self, gan_mode: str, real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        self.gan_mode = gan_mode
        self.register_buffer("real_label", torch.tensor(real_label))
        self.register_buffer("fake_label", torch.tensor(fake_label))
        if gan_mode == "lsgan":
            self.loss = nn.MSELoss()
        elif gan_mode == "vanilla":
            self.loss = nn.BCEWithLogitsLoss()
        elif gan_mode == "wgangp":
            self.loss = None
        else:
            raise ValueError(f"gan_mode: unknown {gan_mode!r}")

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        prediction = prediction.float()  # losses in fp32 even under autocast
        if self.gan_mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        target = (self.real_label if target_is_real else self.fake_label).expand_as(prediction)
        return self.loss(prediction, target)


def gradient_penalty(netD: nn.Module, real: torch.Tensor, fake: torch.Tensor, weight: float = 10.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al.): weight * (||grad D(x_hat)||_2 - 1)^2 on random interpolates."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = netD(interpolates)
    grads = torch.autograd.grad(outputs=out, inputs=interpolates, grad_outputs=torch.ones_like(out),
                                create_graph=True, retain_graph=True, only_inputs=True)[0]
    grads = grads.reshape(real.shape[0], -1)
    return ((grads.norm(2, dim=1) - 1.0) ** 2).mean() * weight


class ImagePool:
    """History of generated images (Shrivastava et al.), so D also sees older fakes.

    Until the pool is full every image is stored and returned. Then each image, with
    probability 1/2, is swapped with a random stored one (the stored one is returned);
    otherwise it is returned as is. The pool's own generator makes it reproducible.
    """

    def __init__(self, pool_size: int, seed: int = 0):
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image)
                out.append(image)
            elif torch.rand((), generator=self.rng).item() > 0.5:
                idx = int(torch.randint(0, self.pool_size, (), generator=self.rng))
                out.append(self.images[idx].clone())
                self.images[idx] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        images = torch.cat(self.images, 0).cpu() if self.images else torch.empty(0)
        return {"pool_size": self.pool_size, "images": images, "rng": self.rng.get_state()}

    def resize(self, pool_size: int) -> None:
        """Keep at most ``pool_size`` images from now on (the first stored ones when it shrinks)."""
        self.pool_size = pool_size
        del self.images[pool_size:]

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.pool_size = state["pool_size"]
        self.images = [img.unsqueeze(0).to(device) for img in state["images"]] if state["images"].numel() else []
        self.rng.set_state(state["rng"])
