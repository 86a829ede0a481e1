"""The objective's pieces against hand computations, and the image pool's semantics."""
import pytest
import torch
from torch import nn

from cyclegan.core.losses import GANLoss, ImagePool, gradient_penalty


def test_lsgan_is_mean_squared_distance_to_the_label():
    pred = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
    assert GANLoss("lsgan")(pred, True).item() == pytest.approx(((0.25 + 4 + 1 + 0) / 4))
    assert GANLoss("lsgan")(pred, False).item() == pytest.approx(((0.25 + 1 + 4 + 1) / 4))


def test_vanilla_is_binary_cross_entropy_on_logits():
    pred = torch.tensor([0.0, 2.0])
    sig = torch.sigmoid(pred)
    assert GANLoss("vanilla")(pred, True).item() == pytest.approx(-torch.log(sig).mean().item(), rel=1e-6)
    assert GANLoss("vanilla")(pred, False).item() == pytest.approx(-torch.log(1 - sig).mean().item(), rel=1e-6)


def test_wgangp_is_the_signed_mean():
    pred = torch.tensor([1.0, 3.0])
    assert GANLoss("wgangp")(pred, True).item() == -2.0
    assert GANLoss("wgangp")(pred, False).item() == 2.0


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = <w, x>: the gradient is w everywhere, so the penalty is weight * (||w|| - 1)^2.
    critic = nn.Conv2d(1, 1, kernel_size=2, bias=False)  # on a 2x2 image: one output = <w, x>
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]]))
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    assert gradient_penalty(critic, real, fake, weight=10.0).item() == pytest.approx(10 * (5 - 1) ** 2)


def test_cycle_and_identity_weights_follow_the_reference():
    # identity loss of G_A is weighted lambda_B * lambda_identity, cycle A by lambda_A.
    from cyclegan.core.config import from_dict
    from cyclegan.core.model import CycleGAN
    cfg = from_dict(dict(netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32, load_size=32, lambda_A=2.0,
                         lambda_B=3.0, lambda_identity=0.5, pool_size=0))
    model = CycleGAN(cfg)
    torch.manual_seed(0)
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        g_a = [p.clone() for p in model.G_A.parameters()]
        fake_b = model.G_A(a)
        expected_cycle_A = (model.G_B(fake_b) - a).abs().mean().item() * 2.0
        expected_idt_A = (model.G_A(b) - b).abs().mean().item() * 3.0 * 0.5
    losses = model.optimize(a, b)
    assert losses["cycle_A"] == pytest.approx(expected_cycle_A, rel=1e-5)
    assert losses["idt_A"] == pytest.approx(expected_idt_A, rel=1e-5)
    assert any(not torch.equal(p, q) for p, q in zip(g_a, model.G_A.parameters()))
    assert sorted(losses) == sorted(["D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B"])


def test_pool_size_zero_returns_the_input():
    images = torch.randn(3, 3, 4, 4)
    assert ImagePool(0).query(images) is images


def test_pool_fills_then_swaps_with_probability_half():
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: everything returned and stored
    returned_old = 0
    trials = 400
    for i in range(trials):
        new = torch.full((1, 1, 1, 1), 100.0 + i)
        out = pool.query(new)
        stored = torch.cat(pool.images).flatten().tolist()
        if out.item() == new.item():
            assert new.item() not in stored  # kept out of the pool
        else:
            returned_old += 1
            assert new.item() in stored      # swapped in for the one returned
        assert len(stored) == 4
    assert 0.4 < returned_old / trials < 0.6


def test_pool_state_round_trip_is_reproducible():
    pool = ImagePool(3, seed=1)
    for i in range(5):
        pool.query(torch.full((2, 1, 2, 2), float(i)))
    clone = ImagePool(3, seed=99)
    clone.load_state_dict(pool.state_dict())
    for i in range(10):
        x = torch.full((2, 1, 2, 2), 50.0 + i)
        assert torch.equal(pool.query(x), clone.query(x))


@pytest.mark.parametrize("options", [dict(gan_mode="vanilla"), dict(gan_mode="wgangp"), dict(norm="batch"),
                                     dict(netD="pixel", channels_last=True), dict(netG="unet_128", crop_size=128,
                                                                                   load_size=128, ngf=2)])
def test_every_objective_variant_trains(options):
    from cyclegan.core.config import from_dict
    from cyclegan.core.model import CycleGAN
    values = dict(netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32, load_size=32, pool_size=2)
    values.update(options)
    model = CycleGAN(from_dict(values))
    size = values["crop_size"]
    before = [p.clone() for p in model.D_A.parameters()]
    for _ in range(2):
        losses = model.optimize(torch.rand(2, 3, size, size) * 2 - 1, torch.rand(2, 3, size, size) * 2 - 1)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in losses.values())
    assert any(not torch.equal(p, q) for p, q in zip(before, model.D_A.parameters()))
