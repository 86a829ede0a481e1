"""The CycleGAN objective (Zhu et al. 2017, eq. 1-3 and sec. 5.2) as plain functions of networks and images.

Notation: the paper's G: X -> Y is ``G_A`` (domain A -> B) and F: Y -> X is ``G_B``; D_Y is ``D_A``
(it judges domain B: real B vs G_A(A)) and D_X is ``D_B``. The functions only compute; the training
step (zero_grad, backward, gradient sync, optimizer step) lives in ``model.CycleGAN.optimize``.

The order of operations is part of the contract: it fixes the floating-point results (the golden
loss curve in the tests) and the order in which the networks draw random numbers (dropout).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .losses import GANLoss, gradient_penalty

# The parts of the objective reported per step, in the reference's order.
LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")


def generator_loss(G_A: nn.Module, G_B: nn.Module, D_A: nn.Module, D_B: nn.Module,
                   real_A: torch.Tensor, real_B: torch.Tensor, gan: GANLoss,
                   lambda_A: float, lambda_B: float, lambda_identity: float
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Optional[torch.Tensor]]]:
    """The generators' objective with the discriminators held fixed.

    Returns (total, parts, images): ``parts`` are G_A, G_B, cycle_A, cycle_B, idt_A, idt_B and
    ``images`` the generated fake_B, rec_A, fake_A, rec_B, idt_A, idt_B (the pools and logs use them).
    """
    fake_B = G_A(real_A)      # G(x)
    rec_A = G_B(fake_B)       # F(G(x)) ~ x
    fake_A = G_B(real_B)      # F(y)
    rec_B = G_A(fake_A)       # G(F(y)) ~ y
    # L_GAN(G, D_Y, X, Y) and L_GAN(F, D_X, Y, X): each generator tries to make its D say "real".
    loss_G_A = gan(D_A(fake_B), True)
    loss_G_B = gan(D_B(fake_A), True)
    # lambda * L_cyc(G, F): ||F(G(x)) - x||_1 and ||G(F(y)) - y||_1, each with its own lambda.
    loss_cycle_A = F.l1_loss(rec_A.float(), real_A) * lambda_A
    loss_cycle_B = F.l1_loss(rec_B.float(), real_B) * lambda_B
    if lambda_identity > 0:
        # L_identity (sec. 5.2): G(y) ~ y and F(x) ~ x, weighted lambda_identity * lambda of the
        # target domain, so colours are kept where they need not change.
        idt_A = G_A(real_B)
        idt_B = G_B(real_A)
        loss_idt_A = F.l1_loss(idt_A.float(), real_B) * lambda_B * lambda_identity
        loss_idt_B = F.l1_loss(idt_B.float(), real_A) * lambda_A * lambda_identity
    else:
        idt_A = idt_B = None
        loss_idt_A = loss_idt_B = torch.zeros((), device=real_A.device)
    # The full objective L(G, F, D_X, D_Y) as the generators minimise it (eq. 3).
    total = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
    parts = {"G_A": loss_G_A, "G_B": loss_G_B, "cycle_A": loss_cycle_A, "cycle_B": loss_cycle_B,
             "idt_A": loss_idt_A, "idt_B": loss_idt_B}
    images = {"fake_B": fake_B, "rec_A": rec_A, "fake_A": fake_A, "rec_B": rec_B, "idt_A": idt_A, "idt_B": idt_B}
    return total, parts, images


def one_discriminator_loss(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, gan: GANLoss,
                           lambda_gp: float = 0.0, gp_rng: Optional[torch.Generator] = None) -> torch.Tensor:
    """L_GAN for one discriminator: (GAN(D(real), real) + GAN(D(fake), fake)) / 2 (halved as in the
    paper's sec. 4, so D learns slower than G), plus the gradient penalty for gan_mode wgangp."""
    loss = (gan(D(real), True) + gan(D(fake.detach()), False)) * 0.5
    if gan.gan_mode == "wgangp":
        loss = loss + gradient_penalty(D, real, fake.detach(), lambda_gp, gp_rng)
    return loss


def discriminator_loss(D_A: nn.Module, D_B: nn.Module, real_A: torch.Tensor, real_B: torch.Tensor,
                       fake_A: torch.Tensor, fake_B: torch.Tensor, gan: GANLoss, lambda_gp: float = 0.0,
                       gp_rng: Optional[torch.Generator] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Both discriminators' objective on real images and (pooled) generated ones: (total, {D_A, D_B}).

    D_A (the paper's D_Y) separates real B from G_A(A); D_B (D_X) separates real A from G_B(B).
    """
    loss_D_A = one_discriminator_loss(D_A, real_B, fake_B, gan, lambda_gp, gp_rng)
    loss_D_B = one_discriminator_loss(D_B, real_A, fake_A, gan, lambda_gp, gp_rng)
    return loss_D_A + loss_D_B, {"D_A": loss_D_A, "D_B": loss_D_B}
