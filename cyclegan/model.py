"""The CycleGAN model: two generators, two discriminators, the objective and one training step.

Notation follows the paper: G_A: A -> B (the paper's G), G_B: B -> A (the paper's F);
D_A judges domain B (real B vs G_A(A)), D_B judges domain A.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .config import Config
from .losses import GANLoss, ImagePool, gradient_penalty
from .networks import define_D, define_G

LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
NET_NAMES = ("G_A", "G_B", "D_A", "D_B")


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed; (0, 1) when not data parallel."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(cfg: Config, epoch: int) -> float:
    """Multiplier of the base learning rate during ``epoch`` (1-based), for the stateless policies.

    linear: 1 for the first n_epochs epochs, then down by 1/(n_epochs_decay+1) per epoch, so the
    last decay epoch still trains at 1/(n_epochs_decay+1) and the rate reaches zero only after it.
    """
    if cfg.lr_policy == "linear":
        return 1.0 - max(0, epoch - cfg.n_epochs) / float(cfg.n_epochs_decay + 1)
    if cfg.lr_policy == "step":
        return 0.1 ** ((epoch - 1) // cfg.lr_decay_iters)
    if cfg.lr_policy == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.total_epochs))
    return 1.0  # plateau: adjusted by ReduceLROnPlateau from the epoch's losses


class CycleGAN(nn.Module):
    def __init__(self, cfg: Config, device: Optional[torch.device] = None, train: bool = True):
        super().__init__()
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
        use_dropout = not cfg.no_dropout
        g_args = dict(norm=cfg.norm, use_dropout=use_dropout, init_type=cfg.init_type, init_gain=cfg.init_gain)
        self.G_A = define_G(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.netG, **g_args)
        self.G_B = define_G(cfg.output_nc, cfg.input_nc, cfg.ngf, cfg.netG, **g_args)
        self.is_train = train
        rank, self.world_size = process_group()
        if train:
            d_args = dict(n_layers_D=cfg.n_layers_D, norm=cfg.norm, init_type=cfg.init_type, init_gain=cfg.init_gain)
            self.D_A = define_D(cfg.output_nc, cfg.ndf, cfg.netD, **d_args)
            self.D_B = define_D(cfg.input_nc, cfg.ndf, cfg.netD, **d_args)
            self.criterion_gan = GANLoss(cfg.gan_mode)
            self.criterion_cycle = nn.L1Loss()
            self.criterion_idt = nn.L1Loss()
            rank_seed = cfg.seed + 10 * rank  # each process draws its own pool swaps
            self.fake_A_pool = ImagePool(cfg.pool_size, seed=rank_seed + 1)
            self.fake_B_pool = ImagePool(cfg.pool_size, seed=rank_seed + 2)
            self.gp_rng = torch.Generator(device=self.device).manual_seed(rank_seed + 3)
            betas = (cfg.beta1, 0.999)
            self.optimizer_G = torch.optim.Adam(list(self.G_A.parameters()) + list(self.G_B.parameters()),
                                                lr=cfg.lr, betas=betas)
            self.optimizer_D = torch.optim.Adam(list(self.D_A.parameters()) + list(self.D_B.parameters()),
                                                lr=cfg.lr, betas=betas)
            self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer_G, mode="min", factor=0.2,
                                                                       threshold=0.01, patience=5)
                            if cfg.lr_policy == "plateau" else None)
        if self.world_size > 1 and cfg.norm == "batch":  # batch statistics over all processes' images
            for name, net in self.networks().items():
                setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(net))
        self.to(self.device)
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        if self.amp_dtype is not None and self.device.type != "cuda":
            self.amp_dtype = None  # autocast on CPU is slower than fp32 for these convs; AMP is a GPU option
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)

    # ------------------------------------------------------------------ helpers
    def networks(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in NET_NAMES if hasattr(self, name)}

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        return images.to(self.device, non_blocking=True, memory_format=fmt)

    @staticmethod
    def set_requires_grad(nets, flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad_(flag)

    def set_epoch_lr(self, epoch: int) -> float:
        """Set the learning rate for ``epoch`` from the policy; exact after any resume."""
        if self.plateau is None:
            for opt in (self.optimizer_G, self.optimizer_D):
                for group in opt.param_groups:
                    group["lr"] = self.cfg.lr * lr_factor(self.cfg, epoch)
        return self.optimizer_G.param_groups[0]["lr"]

    def end_epoch(self, mean_loss_G: float) -> None:
        if self.plateau is not None:
            self.plateau.step(mean_loss_G)
            for group in self.optimizer_D.param_groups:  # both optimizers follow one schedule
                group["lr"] = self.optimizer_G.param_groups[0]["lr"]

    def average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Data parallelism: every process steps with the mean gradient over all processes.

        One all-reduce of the flattened gradients per optimizer. (DDP's wrapper does not fit this
        step: each generator runs up to three times per iteration and the discriminators are frozen
        for the generators' backward pass.)
        """
        if self.world_size == 1:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world_size
        for grad, mean in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(mean)

    # ------------------------------------------------------------------ objective
    def discriminator_loss(self, netD: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """(GAN(D(real), real) + GAN(D(fake), fake)) / 2, plus the gradient penalty for wgangp."""
        loss = (self.criterion_gan(netD(real), True) + self.criterion_gan(netD(fake.detach()), False)) * 0.5
        if self.cfg.gan_mode == "wgangp":
            loss = loss + gradient_penalty(netD, real, fake.detach(), self.cfg.lambda_gp, self.gp_rng)
        return loss

    def optimize(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, float]:
        """One iteration: update G_A and G_B with the discriminators frozen, then D_A and D_B."""
        cfg = self.cfg
        real_A, real_B = self.prepare(real_A), self.prepare(real_B)
        lambda_A, lambda_B, lambda_idt = cfg.lambda_A, cfg.lambda_B, cfg.lambda_identity

        # Generators: adversarial + cycle-consistency (+ identity) losses.
        self.set_requires_grad([self.D_A, self.D_B], False)
        self.optimizer_G.zero_grad(set_to_none=True)
        with self.autocast():
            fake_B = self.G_A(real_A)      # G(x)
            rec_A = self.G_B(fake_B)       # F(G(x)) ~ x
            fake_A = self.G_B(real_B)      # F(y)
            rec_B = self.G_A(fake_A)       # G(F(y)) ~ y
            loss_G_A = self.criterion_gan(self.D_A(fake_B), True)
            loss_G_B = self.criterion_gan(self.D_B(fake_A), True)
            loss_cycle_A = self.criterion_cycle(rec_A.float(), real_A) * lambda_A
            loss_cycle_B = self.criterion_cycle(rec_B.float(), real_B) * lambda_B
            if lambda_idt > 0:  # G_A(y) ~ y and G_B(x) ~ x keep colours when they need not change
                idt_A = self.G_A(real_B)
                idt_B = self.G_B(real_A)
                loss_idt_A = self.criterion_idt(idt_A.float(), real_B) * lambda_B * lambda_idt
                loss_idt_B = self.criterion_idt(idt_B.float(), real_A) * lambda_A * lambda_idt
            else:
                idt_A = idt_B = None
                loss_idt_A = loss_idt_B = torch.zeros((), device=self.device)
            loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        self.scaler.scale(loss_G).backward()
        self.average_gradients(self.optimizer_G)
        self.scaler.step(self.optimizer_G)

        # Discriminators, on generated images drawn through the history pools.
        self.set_requires_grad([self.D_A, self.D_B], True)
        self.optimizer_D.zero_grad(set_to_none=True)
        with self.autocast():
            loss_D_A = self.discriminator_loss(self.D_A, real_B, self.fake_B_pool.query(fake_B))
            loss_D_B = self.discriminator_loss(self.D_B, real_A, self.fake_A_pool.query(fake_A))
        self.scaler.scale(loss_D_A + loss_D_B).backward()
        self.average_gradients(self.optimizer_D)
        self.scaler.step(self.optimizer_D)
        self.scaler.update()

        self.visuals = {"real_A": real_A, "fake_B": fake_B, "rec_A": rec_A, "idt_B": idt_B,
                        "real_B": real_B, "fake_A": fake_A, "rec_B": rec_B, "idt_A": idt_A}
        losses = {"D_A": loss_D_A, "G_A": loss_G_A, "cycle_A": loss_cycle_A, "idt_A": loss_idt_A,
                  "D_B": loss_D_B, "G_B": loss_G_B, "cycle_B": loss_cycle_B, "idt_B": loss_idt_B}
        return {name: float(value.detach()) for name, value in losses.items()}

    @torch.no_grad()
    def translate(self, real_A: Optional[torch.Tensor] = None, real_B: Optional[torch.Tensor] = None) -> dict:
        """Test-time visuals in the reference order: real_A fake_B rec_A real_B fake_A rec_B."""
        out = {}
        with self.autocast():
            if real_A is not None:
                real_A = self.prepare(real_A)
                fake_B = self.G_A(real_A)
                out.update(real_A=real_A, fake_B=fake_B, rec_A=self.G_B(fake_B))
            if real_B is not None:
                real_B = self.prepare(real_B)
                fake_A = self.G_B(real_B)
                out.update(real_B=real_B, fake_A=fake_A, rec_B=self.G_A(fake_A))
        return {k: v.float() for k, v in out.items()}

    # ------------------------------------------------------------------ state
    def training_state(self) -> dict:
        """Everything a training run needs besides the data position: nets, optimizers, schedule, pools."""
        return {
            "nets": {name: net.state_dict() for name, net in self.networks().items()},
            "optimizer_G": self.optimizer_G.state_dict(),
            "optimizer_D": self.optimizer_D.state_dict(),
            "scheduler": {"policy": self.cfg.lr_policy,
                          "plateau": self.plateau.state_dict() if self.plateau is not None else {}},
            "pools": {"fake_A": self.fake_A_pool.state_dict(), "fake_B": self.fake_B_pool.state_dict()},
            "gp_rng": self.gp_rng.get_state(),
            "scaler": self.scaler.state_dict(),
        }

    def load_training_state(self, state: dict) -> None:
        for name, net in self.networks().items():
            net.load_state_dict(state["nets"][name])
        self.optimizer_G.load_state_dict(state["optimizer_G"])
        self.optimizer_D.load_state_dict(state["optimizer_D"])
        if self.plateau is not None and state["scheduler"].get("plateau"):
            self.plateau.load_state_dict(state["scheduler"]["plateau"])
        self.fake_A_pool.load_state_dict(state["pools"]["fake_A"], self.device)
        self.fake_B_pool.load_state_dict(state["pools"]["fake_B"], self.device)
        self.gp_rng.set_state(state["gp_rng"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
