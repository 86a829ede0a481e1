"""The CycleGAN model: its four networks, their optimizers and one training step.

Notation follows the paper: G_A: A -> B (the paper's G), G_B: B -> A (the paper's F);
D_A judges domain B (real B vs G_A(A)), D_B judges domain A. The objective itself is in
``objective.py``; this module holds the mechanics around it (devices, precision, compilation,
optimizer steps, gradient averaging, state).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn

from . import checkpoint as ckpt
from .config import Config, check_device_options
from .losses import GANLoss, ImagePool
from .networks import define_D, define_G
from .objective import LOSS_NAMES, discriminator_loss, generator_loss
from .parallel import GradientSync, process_group, resolve_device
from .schedules import lr_factor, plateau_scheduler, set_lr

NET_NAMES = ("G_A", "G_B", "D_A", "D_B")


class CycleGAN(nn.Module):
    def __init__(self, cfg: Config, device: Optional[torch.device] = None, train: bool = True,
                 gradient_sync: type[GradientSync] = GradientSync):
        """``gradient_sync``: how each optimizer's gradients are averaged over processes (benchmarks
        pass a variant that simulates a slower link)."""
        super().__init__()
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        check_device_options(cfg, self.device.type)
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
            rank_seed = cfg.seed + 10 * rank  # each process draws its own pool swaps
            self.fake_A_pool = ImagePool(cfg.pool_size, seed=rank_seed + 1)
            self.fake_B_pool = ImagePool(cfg.pool_size, seed=rank_seed + 2)
            self.gp_rng = torch.Generator(device=self.device).manual_seed(rank_seed + 3)
            # fused=None keeps torch's default implementation (foreach on CUDA, a loop over tensors on CPU).
            adam = dict(lr=cfg.lr, betas=(cfg.beta1, 0.999), fused=True if cfg.fused_adam else None)
            self.optimizer_G = torch.optim.Adam(list(self.G_A.parameters()) + list(self.G_B.parameters()), **adam)
            self.optimizer_D = torch.optim.Adam(list(self.D_A.parameters()) + list(self.D_B.parameters()), **adam)
            self.plateau = plateau_scheduler(cfg, self.optimizer_G)
        if self.world_size > 1 and cfg.norm == "batch":  # batch statistics over all processes' images
            for name, net in self.networks().items():
                setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(net))
        self.to(self.device)
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)
        if train:  # under data parallelism: each optimizer's gradients averaged while backward runs
            self.sync_G, self.sync_D = (
                gradient_sync((p for group in opt.param_groups for p in group["params"]), self.world_size,
                              compress=cfg.grad_compression) for opt in (self.optimizer_G, self.optimizer_D))
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)  # fp16: CUDA only (checked)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        if cfg.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self._compile(train)
        self.loss_G: Optional[torch.Tensor] = None  # the last step's generator objective (detached)

    def _compile(self, train: bool) -> None:
        """compile networks: each network's forward is compiled in place (``nn.Module.compile``, so
        state_dict keys stay clean). compile step: the generator and discriminator objectives (forward
        passes and losses) are compiled as one graph each; backward is compiled with them."""
        cfg = self.cfg
        self.generator_loss, self.discriminator_loss = generator_loss, discriminator_loss
        if cfg.compile == "none":
            return
        if cfg.compile == "networks":
            for net in self.networks().values():
                net.compile()
        elif train:
            self.generator_loss = torch.compile(generator_loss)
            self.discriminator_loss = torch.compile(discriminator_loss)
        else:
            for net in (self.G_A, self.G_B):
                net.compile()

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
            set_lr((self.optimizer_G, self.optimizer_D), self.cfg.lr * lr_factor(self.cfg, epoch))
        return self.optimizer_G.param_groups[0]["lr"]

    def end_epoch(self, mean_loss_G: float) -> None:
        if self.plateau is not None:
            self.plateau.step(float(mean_loss_G))
            set_lr((self.optimizer_D,), self.optimizer_G.param_groups[0]["lr"])  # both follow one schedule

    def _step(self, optimizer: torch.optim.Optimizer, sync: GradientSync, loss: torch.Tensor) -> None:
        """backward (scaled for fp16), the mean gradient over processes, the optimizer step."""
        self.scaler.scale(loss).backward()  # the gradients' all-reduces start during it
        sync.finish()
        self.scaler.step(optimizer)

    # ------------------------------------------------------------------ one training iteration
    def optimize(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """One iteration: update G_A and G_B with the discriminators frozen, then D_A and D_B.

        Returns the parts of the objective as detached tensors on the device: reading them (float())
        waits for the device, so the caller does it only when it logs. ``self.loss_G`` is the total.
        """
        cfg = self.cfg
        real_A, real_B = self.prepare(real_A), self.prepare(real_B)

        self.set_requires_grad([self.D_A, self.D_B], False)
        self.optimizer_G.zero_grad(set_to_none=True)
        with self.autocast():
            loss_G, parts_G, images = self.generator_loss(
                self.G_A, self.G_B, self.D_A, self.D_B, real_A, real_B, self.criterion_gan,
                cfg.lambda_A, cfg.lambda_B, cfg.lambda_identity)
        self._step(self.optimizer_G, self.sync_G, loss_G)

        # Discriminators, on generated images drawn through the history pools.
        self.set_requires_grad([self.D_A, self.D_B], True)
        self.optimizer_D.zero_grad(set_to_none=True)
        fake_B = self.fake_B_pool.query(images["fake_B"])
        fake_A = self.fake_A_pool.query(images["fake_A"])
        with self.autocast():
            loss_D, parts_D = self.discriminator_loss(self.D_A, self.D_B, real_A, real_B, fake_A, fake_B,
                                                      self.criterion_gan, cfg.lambda_gp, self.gp_rng)
        self._step(self.optimizer_D, self.sync_D, loss_D)
        self.scaler.update()

        self.visuals = {"real_A": real_A, "real_B": real_B, **images}
        self.loss_G = loss_G.detach()
        parts = {**parts_G, **parts_D}
        return {name: parts[name].detach() for name in LOSS_NAMES}

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
        ckpt.set_generator_state(self.gp_rng, state["gp_rng"])  # a CPU state on a GPU too
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
