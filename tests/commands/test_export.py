"""cyclegan export: ONNX and TorchScript files that compute what the PyTorch generator computes in
`cyclegan test`'s mode, read back here with ONNX Runtime and torch.jit at sizes and batches other than
the export's; a run's exports give `cyclegan test`'s pixels; a failed check writes nothing."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torch import nn

from cyclegan.cli import main
from cyclegan.core.config import from_dict
from cyclegan.core.data import normalize, to_uint8
from cyclegan.core.networks import define_G


def ort_run(data: bytes, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def as_cyclegan_test_runs_it(net: nn.Module, x: torch.Tensor, eval_mode: bool) -> torch.Tensor:
    """The generator as `cyclegan test` runs it, one image at a time: eval mode with --eval, otherwise
    training mode (batch norm from the image's statistics) with dropout's draws left out."""
    net.train(not eval_mode)
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        return torch.cat([net(x[i:i + 1]) for i in range(len(x))])


# netG, norm, dropout, --eval, crop size, (batch, height, width) checked here
CASES = [("resnet_6blocks", "instance", True, False, 24, (3, 32, 20)),
         ("resnet_9blocks", "batch", False, False, 24, (3, 16, 28)),
         ("unet_128", "batch", True, True, 128, (2, 256, 128)),
         ("unet_256", "instance", False, False, 256, (1, 256, 512))]


@pytest.mark.slow  # an end-to-end command run
@pytest.mark.parametrize("netG,norm,dropout,eval_mode,crop,checked", CASES, ids=[c[0] for c in CASES])
def test_exports_compute_what_cyclegan_test_computes_at_any_batch_and_allowed_size(
        netG, norm, dropout, eval_mode, crop, checked, tmp_path, capsys):
    torch.manual_seed(0)
    net = define_G(3, 3, 4, netG, norm, dropout)
    for m in net.modules():  # running statistics unlike any one image's, so --eval makes a difference
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    weights = tmp_path / "pretrained" / "latest_net_G.pth"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)
    flags = ["--netG", netG, "--norm", norm, "--ngf", "4", "--crop_size", str(crop)]
    flags += ["--dropout"] if dropout else []
    flags += ["--eval"] if eval_mode else []
    assert main(["export", "--generator", str(weights), "--out", str(tmp_path / "out"), *flags]) == 0
    printed = capsys.readouterr().out
    assert "G.onnx: max |ONNX Runtime" in printed and "G.torchscript.pt: max |TorchScript - PyTorch|" in printed

    x = torch.rand(*checked[:1], 3, *checked[1:], generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected = as_cyclegan_test_runs_it(net, x, eval_mode)
    onnx_bytes = (tmp_path / "out" / "G.onnx").read_bytes()
    assert (ort_run(onnx_bytes, x) - expected).abs().max() < 1e-4
    with pytest.warns(FutureWarning, match="deprecated"):  # torch.jit is; TorchScript files are still asked for
        scripted = torch.jit.load(io.BytesIO((tmp_path / "out" / "G.torchscript.pt").read_bytes()))
    with torch.no_grad():
        assert (scripted(x) - expected).abs().max() < 1e-4
        # One image alone gives what it gives in a batch: no statistics are shared across the batch.
        assert (scripted(x[-1:]) - expected[-1:]).abs().max() < 1e-4

    for fmt, file in (("onnx", "G.onnx"), ("torchscript", "G.torchscript.pt")):
        meta = json.loads((tmp_path / "out" / f"{file}.json").read_text())
        assert meta["format"] == fmt and meta["generator"] == "G" and meta["weights"] == str(weights)
        assert meta["architecture"] == {"netG": netG, "ngf": 4, "norm": norm, "dropout_layers": dropout,
                                        "input_nc": 3, "output_nc": 3}
        assert meta["input"]["range"] == [-1.0, 1.0] and meta["input"]["layout"] == "NCHW"
        multiple = {"unet_128": 128, "unet_256": 256}.get(netG, 4)
        assert meta["input"]["height_width"].startswith(f"any multiples of {multiple}")
        assert meta["test_time"]["dropout"].startswith("off")
        assert ("varies" in meta["test_time"]["dropout"] or "vary" in meta["test_time"]["dropout"]) == (
            dropout and not eval_mode)
        assert meta["test_time"]["normalisation"].startswith({"instance": "instance norm: each image's own",
                                                              "batch": "batch norm: "}[norm])
        assert ("running statistics" in meta["test_time"]["normalisation"]) == (norm == "batch" and eval_mode)
        assert 0 <= meta["check"]["max_abs_difference"] <= meta["check"]["tolerance"] == 1e-4
    model = onnx.load_from_string(onnx_bytes)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))  # batch, height, width
    embedded = json.loads({p.key: p.value for p in model.metadata_props}["cyclegan"])
    assert embedded["architecture"]["netG"] == netG and embedded["opset"] >= 18


@pytest.fixture(scope="module")
def batch_norm_run(tiny_pair, tmp_path_factory) -> Path:
    """A run folder of a tiny batch-norm model, trained for two epochs."""
    from cyclegan.core.trainer import Trainer
    checkpoints = tmp_path_factory.mktemp("export")
    Trainer(from_dict(dict(netG="resnet_6blocks", norm="batch", ngf=4, ndf=4, load_size=28, crop_size=24,
                           num_threads=0, n_epochs=1, n_epochs_decay=1, seed=5, dataroot=str(tiny_pair),
                           checkpoints_dir=str(checkpoints), name="bn", tensorboard=False, eval_at_end=False)),
            progress_bar=False).run()
    return checkpoints / "bn"


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_a_runs_exports_in_a_bucket_and_translate_in_batches_give_cyclegan_tests_pixels(batch_norm_run, tiny_pair, s3, tmp_path, capsys):
    s3.mkdir("exports")
    assert main(["export", "--generator", str(batch_norm_run), "--out", "s3://exports/bn", "--crop_size", "24",
                 "--input", str(tiny_pair)]) == 0
    printed = capsys.readouterr().out  # a dataset root: each generator checked on its own domain's images
    for line, side in (("G_A.onnx: max |ONNX Runtime", "A"), ("G_B.torchscript.pt: max |TorchScript", "B")):
        assert any(row.startswith(line) and f"on 4 image(s) of {tiny_pair / f'test{side}'} and" in row
                   for row in printed.splitlines()), printed
    assert sorted(p.rsplit("/", 1)[1] for p in s3.ls("exports/bn") if not p.endswith("/")) == sorted(
        f"{g}{suffix}" for g in ("G_A", "G_B") for suffix in (".onnx", ".onnx.json", ".torchscript.pt",
                                                                 ".torchscript.pt.json"))
    assert json.loads(s3.cat("exports/bn/G_B.onnx.json"))["translates"].startswith("B to A")

    results = tmp_path / "results"
    assert main(["test", "--name", "bn", "--checkpoints_dir", str(batch_norm_run.parent), "--dataroot", str(tiny_pair),
                 "--results_dir", str(results), "--netG", "resnet_6blocks", "--norm", "batch", "--ngf", "4",
                 "--ndf", "4", "--crop_size", "24"]) == 0
    images = results / "bn" / "test_latest" / "images"
    rows = sorted(p.stem for p in (tiny_pair / "testA").glob("*.png"))  # results are named after testA's images
    for side, generator, fake in (("A", "G_A", "fake_B"), ("B", "G_B", "fake_A")):
        inputs = sorted((tiny_pair / f"test{side}").glob("*.png"))  # row i shows testA[i] and testB[i]
        x = normalize(torch.from_numpy(np.stack([pixels(p).transpose(2, 0, 1) for p in inputs])))
        # All test images as one batch: batch norm took each image's statistics in cyclegan test (one per batch).
        out = to_uint8(ort_run(s3.cat(f"exports/bn/{generator}.onnx"), x).numpy(), truncate=True).transpose(0, 2, 3, 1)
        expected = np.stack([pixels(images / f"{row}_{fake}.png") for row in rows])
        # Truncation to 8 bits may tip a value lying within 1e-6 of a level: at most one level, rarely.
        differ = out.astype(int) - expected
        assert np.abs(differ).max() <= 1 and np.count_nonzero(differ) <= differ.size // 1000 + 1, generator

    # cyclegan translate, four images a batch, gives these pixels exactly: its batch norm is per image too.
    assert main(["translate", "--generator", str(batch_norm_run), "--input", str(tiny_pair / "testA"),
                 "--output", str(tmp_path / "translated"), "--crop_size", "24", "--batch_size", "4"]) == 0
    for row in rows:
        assert np.array_equal(pixels(tmp_path / "translated" / f"{row}.png"), pixels(images / f"{row}_fake_B.png"))


def test_an_export_over_the_tolerance_or_with_images_of_a_wrong_size_fails_and_writes_nothing(batch_norm_run, tiny_pair, tmp_path, capsys):
    assert main(["export", "--generator", str(batch_norm_run / "latest_net_G_A.pth"), "--out", str(tmp_path / "out"),
                 "--netG", "resnet_6blocks", "--norm", "batch", "--ngf", "4", "--crop_size", "24",
                 "--export_format", "onnx", "--export_tolerance", "0"]) == 1
    err = capsys.readouterr().err
    assert "G_A.onnx: ONNX Runtime" in err and "above the tolerance 0; nothing written" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # Check images that the generator cannot take at their size: a clear error before anything is exported.
    assert main(["export", "--generator", str(batch_norm_run), "--out", str(tmp_path / "out"), "--crop_size", "22",
                 "--input", str(tiny_pair / "testA")]) == 2
    err = capsys.readouterr().err
    assert "crop_size: " in err and "makes 22x22 images" in err and "resnet_6blocks takes multiples of 4" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
