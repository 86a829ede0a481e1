"""The fast-step options: each gives the numbers of the plain fp32 step (within float tolerance) or
is refused with a message that names the option (the bench command that reports them:
tests/commands/test_bench.py)."""
from __future__ import annotations

import pytest
import torch

from cyclegan.core import checkpoint as ckpt
from cyclegan.core.config import ConfigError, from_dict
from cyclegan.core.model import CycleGAN
from cyclegan.core.objective import LOSS_NAMES

TINY_NETS = dict(netG="resnet_6blocks", ngf=4, ndf=4, crop_size=24, load_size=24, pool_size=2, device="cpu")


def batches(n: int, size: int = 24):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(1, 3, size, size, generator=g) * 2 - 1, torch.rand(1, 3, size, size, generator=g) * 2 - 1)
            for _ in range(n)]


def train_steps(model: CycleGAN, data) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in model.optimize(a, b).items()} for a, b in data]


def assert_same_training(eager: CycleGAN, other: CycleGAN, curve_eager, curve_other, atol_weights=1e-5):
    for want, got in zip(curve_eager, curve_other):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
    for (name, p), q in zip(eager.named_parameters(), other.parameters()):
        # Conv biases right before an instance norm get no gradient in exact arithmetic, so Adam turns
        # rounding noise into +-lr steps there: compare the weights that learn something.
        if p.ndim > 1:
            torch.testing.assert_close(q, p, rtol=1e-4, atol=atol_weights, msg=name)


def test_optimize_returns_device_tensors_without_a_graph():
    model = CycleGAN(from_dict(TINY_NETS))
    (a, b), = batches(1)
    losses = model.optimize(a, b)
    assert list(losses) == list(LOSS_NAMES)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in losses.values())
    total = sum(float(losses[k]) for k in ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B"))
    assert float(model.loss_G) == pytest.approx(total, rel=1e-6)


def test_fused_adam_gives_the_same_training():
    data = batches(3)
    eager = CycleGAN(from_dict(TINY_NETS))
    fused = CycleGAN(from_dict(dict(TINY_NETS, fused_adam=True)))
    assert fused.optimizer_G.defaults["fused"] is True
    assert_same_training(eager, fused, train_steps(eager, data), train_steps(fused, data))


def test_bf16_autocast_trains_on_cpu():
    model = CycleGAN(from_dict(dict(TINY_NETS, amp="bf16")))
    before = [p.detach().clone() for p in model.G_A.parameters()]
    curve = train_steps(model, batches(2))
    assert model.visuals["fake_B"].dtype == torch.bfloat16  # the convolutions ran in bf16
    assert all(torch.isfinite(torch.tensor(v)) for step in curve for v in step.values())
    assert any(not torch.equal(p, q) for p, q in zip(before, model.G_A.parameters()))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


@pytest.mark.parametrize("options, key", [(dict(amp="fp16"), "amp"), (dict(cudnn_benchmark=True), "cudnn_benchmark")])
def test_cuda_only_options_are_refused_on_cpu(options, key):
    with pytest.raises(ConfigError, match=rf"^{key}: .*needs a CUDA device \(device 'cpu'"):
        from_dict(dict(TINY_NETS, **options))
    if not torch.cuda.is_available():  # device auto resolves to the CPU here: refused when the model is built
        cfg = from_dict(dict(TINY_NETS, device="auto", **options))
        with pytest.raises(ConfigError, match=rf"^{key}: .*needs a CUDA device \(device 'auto' is cpu\)"):
            CycleGAN(cfg)


def test_options_that_cannot_combine_are_refused():
    with pytest.raises(ConfigError, match=r"^compile: 'networks' does not work with gan_mode 'wgangp'"):
        from_dict(dict(TINY_NETS, compile="networks", gan_mode="wgangp"))
    with pytest.raises(ConfigError, match=r"^compile: 'graph' is not one of none, networks, step"):
        from_dict(dict(TINY_NETS, compile="graph"))


@pytest.mark.slow
def test_compiled_networks_train_like_eager_and_save_clean_keys(tmp_path):
    """torch.compile (inductor, C++ on CPU) of the four networks: the same losses and weights as eager
    within float tolerance, and checkpoints an eager model loads."""
    import torch._inductor.config as inductor
    data = batches(2)
    eager = CycleGAN(from_dict(TINY_NETS))
    compiled = CycleGAN(from_dict(dict(TINY_NETS, compile="networks")))
    # Scalar C++ kernels: compiling the vectorized ones took 40% longer here (about 110 s against 67 s
    # for the first step); what is checked is our use of torch.compile, not inductor's vector code.
    with inductor.patch({"cpp.vec_isa_ok": False}):
        curve = train_steps(compiled, data)
    assert_same_training(eager, compiled, train_steps(eager, data), curve)
    state = compiled.training_state()
    keys = [k for sd in state["nets"].values() for k in sd] + list(compiled.state_dict())
    assert keys and not any("_orig_mod" in k for k in keys)
    ckpt.save_reference_weights(tmp_path, compiled.networks(), "latest")
    fresh = CycleGAN(from_dict(TINY_NETS))
    for name, net in fresh.networks().items():
        ckpt.load_reference_weights(net, tmp_path / f"latest_net_{name}.pth")
        assert all(torch.equal(p, q) for p, q in zip(net.parameters(), compiled.networks()[name].parameters()))
