"""Networks: parameter counts and state-dict layout identical to the public reference checkpoints."""
import pytest
import torch

from cyclegan.core.networks import define_D, define_G


def count(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("netG, expected", [
    ("resnet_9blocks", 11_378_179), ("resnet_6blocks", 7_837_699),
    ("unet_256", 54_409_603), ("unet_128", 41_825_667)])
def test_generator_parameter_counts(netG, expected):
    assert count(define_G(3, 3, 64, netG)) == expected


@pytest.mark.parametrize("netD, n_layers, expected", [
    ("basic", 3, 2_764_737), ("n_layers", 2, 662_977), ("n_layers", 4, 6_959_553),
    ("n_layers", 5, 11_154_369), ("pixel", 3, 8_705)])
def test_discriminator_parameter_counts(netD, n_layers, expected):
    assert count(define_D(3, 64, netD, n_layers)) == expected


def test_resnet_9blocks_key_layout():
    sd = define_G(3, 3, 64, "resnet_9blocks").state_dict()
    assert len(sd) == 48
    assert sd["model.1.weight"].shape == (64, 3, 7, 7)
    assert sd["model.4.weight"].shape == (128, 64, 3, 3)
    assert sd["model.7.weight"].shape == (256, 128, 3, 3)
    for block in range(10, 19):
        for conv in (1, 5):
            assert sd[f"model.{block}.conv_block.{conv}.weight"].shape == (256, 256, 3, 3)
            assert f"model.{block}.conv_block.{conv}.bias" in sd
    assert sd["model.19.weight"].shape == (256, 128, 3, 3)  # ConvTranspose2d: (in, out, k, k)
    assert sd["model.22.weight"].shape == (128, 64, 3, 3)
    assert sd["model.26.weight"].shape == (3, 64, 7, 7)
    assert not any("running" in k or "num_batches" in k for k in sd)  # instance norm: no buffers


def test_patchgan_key_layout_and_output():
    net = define_D(3, 64, "basic")
    sd = net.state_dict()
    expected = {"model.0": (64, 3, 4, 4), "model.2": (128, 64, 4, 4), "model.5": (256, 128, 4, 4),
                "model.8": (512, 256, 4, 4), "model.11": (1, 512, 4, 4)}
    assert sorted(sd) == sorted(f"{k}.{p}" for k in expected for p in ("weight", "bias"))
    for key, shape in expected.items():
        assert sd[f"{key}.weight"].shape == shape
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_unet_keys_nest_like_the_reference():
    sd = define_G(3, 3, 64, "unet_256").state_dict()
    assert sd["model.model.0.weight"].shape == (64, 3, 4, 4)       # outermost down conv
    assert sd["model.model.3.weight"].shape == (128, 3, 4, 4)      # outermost up conv (transposed)
    assert "model.model.1.model.1.weight" in sd                    # next level down


@pytest.mark.parametrize("netG", ["resnet_6blocks", "unet_128"])
def test_generators_keep_size_and_range(netG):
    net = define_G(1, 3, 8, netG)
    with torch.no_grad():
        out = net(torch.randn(2, 1, 128, 128))
    assert out.shape == (2, 3, 128, 128)
    assert out.abs().max() <= 1


def test_batch_norm_drops_conv_biases_and_keeps_running_stats():
    sd = define_G(3, 3, 8, "resnet_6blocks", norm="batch").state_dict()
    assert "model.1.bias" not in sd
    assert "model.2.running_mean" in sd
    assert "model.23.bias" in sd  # the output conv (6 blocks: index 23) always has a bias


def test_dropout_shifts_the_second_conv_of_each_block():
    sd = define_G(3, 3, 8, "resnet_6blocks", use_dropout=True).state_dict()
    assert "model.10.conv_block.6.weight" in sd and "model.10.conv_block.5.weight" not in sd


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_types(init_type):
    torch.manual_seed(0)
    net = define_D(3, 8, "basic", init_type=init_type, init_gain=0.02)
    w = net.model[0].weight
    assert torch.all(net.model[0].bias == 0)
    if init_type == "normal":
        assert abs(w.std().item() - 0.02) < 0.005
    assert w.std() > 0


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="netG"):
        define_G(3, 3, 8, "resnet_7blocks")
    with pytest.raises(ValueError, match="norm"):
        define_D(3, 8, "basic", norm="layer")
