"""The one way images go through a trained generator (``inference.translate_batch``): what every command and
a sweep's scores get from it."""
import numpy as np
import torch

from cyclegan.core import inference
from cyclegan.core.evaluate import translate_images
from cyclegan.core.inference import translate_batch
from cyclegan.core.networks import define_G


def generator(norm: str = "instance") -> torch.nn.Module:
    torch.manual_seed(0)
    return define_G(3, 3, 4, "resnet_6blocks", norm, False)


def images(sizes, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in sizes]


def test_images_of_any_sizes_come_back_in_order_each_as_its_own_forward_gives_it():
    """Sizes differ with --preprocess none: each size runs as its own batches, at most batch_size a forward,
    and every output is the generator's output for that image alone, in the order given."""
    net = inference.test_time(generator(), eval_mode=False)
    inputs = images([(16, 16), (20, 12), (16, 16), (16, 16), (20, 12)])
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    outputs = translate_batch(net, inputs, torch.device("cpu"), batch_size=2)
    assert sorted(calls) == sorted([(2, 3, 16, 16), (1, 3, 16, 16), (2, 3, 20, 12)])
    for image, out in zip(inputs, outputs):
        with torch.no_grad():
            alone = net(torch.from_numpy(image)[None].float() / 127.5 - 1)[0]
        assert out.dtype == torch.float32 and out.shape == alone.shape
        torch.testing.assert_close(out, alone, rtol=0, atol=1e-5)  # a batch of two may sum in another order than one image
        assert not out.requires_grad


def test_uint8_images_and_the_float_tensors_the_datasets_make_give_the_same_outputs():
    net = inference.test_time(generator(), eval_mode=True)
    inputs = images([(16, 16)] * 3)
    floats = [torch.from_numpy(i).float() / 127.5 - 1 for i in inputs]
    for a, b in zip(translate_batch(net, inputs), translate_batch(net, floats)):
        assert torch.equal(a, b)


def test_the_scores_view_is_eval_mode_rounded_and_leaves_a_training_generator_training():
    """translate_images (the scores, the trial's image grids, the report's pictures): HxWxC uint8 in and out,
    batch norm from its running statistics, and the generator back in training mode after."""
    net = generator("batch")
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
    hwc = [i.transpose(1, 2, 0) for i in images([(16, 16), (12, 20)], seed=1)]
    out = translate_images(net, hwc)
    assert net.training
    net.eval()
    expected = translate_batch(net, [i.transpose(2, 0, 1) for i in hwc])
    for got, want, image in zip(out, expected, hwc):
        assert got.dtype == np.uint8 and got.shape == image.shape
        assert np.array_equal(got, ((want.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy())
