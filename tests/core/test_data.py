"""Data: preprocess sizes, pairing, and every kind of bad input."""
import dataclasses
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from cyclegan.core.config import from_dict
from cyclegan.core.data import (
    BadImageWarning,
    DataError,
    augment_params,
    decode_image,
    epoch_plan,
    transform,
)
from cyclegan.core.datasets import UnalignedDataset


def cfg_for(**kw):
    return from_dict(kw)


@pytest.mark.parametrize("preprocess, size, expected", [
    ("resize_and_crop", (100, 60), (3, 32, 32)),
    ("crop", (100, 60), (3, 32, 32)),
    ("scale_width", (100, 200), (3, 80, 40)),                 # width to load_size, aspect kept
    ("scale_width", (100, 10), (3, 32, 40)),                  # height never below crop_size
    ("scale_width_and_crop", (100, 60), (3, 32, 32)),
    ("none", (101, 62), (3, 64, 100)),                        # rounded to multiples of 4
])
def test_each_preprocess_mode_output_size(preprocess, size, expected):
    cfg = cfg_for(preprocess=preprocess, load_size=40, crop_size=32)
    img = Image.new("RGB", size, (10, 20, 30))
    out = transform(img, cfg, augment_params(cfg, *img.size, np.random.default_rng(0)))
    assert out.shape == expected and out.dtype == np.float32
    assert -1.0 <= out.min() and out.max() <= 1.0


def test_flip_and_crop_are_deterministic_per_sample():
    cfg = cfg_for(load_size=40, crop_size=32)
    draws = {augment_params(cfg, 50, 50, np.random.default_rng([0, 1, i])) for i in range(40)}
    assert len({(d.crop_x, d.crop_y) for d in draws}) > 5 and {d.flip for d in draws} == {True, False}
    assert augment_params(cfg, 50, 50, np.random.default_rng(5)) == augment_params(cfg, 50, 50,
                                                                                  np.random.default_rng(5))
    assert not any(d.flip for d in (augment_params(cfg_for(no_flip=True), 50, 50, np.random.default_rng(i))
                                    for i in range(20)))


def test_epoch_plan_follows_the_reference_pairing():
    a, b = epoch_plan(5, 3, seed=0, epoch=1, serial=False)
    assert len(a) == len(b) == 5 and sorted(a) == [0, 1, 2, 3, 4] and set(b) <= {0, 1, 2}
    a2, _ = epoch_plan(5, 3, seed=0, epoch=2, serial=False)
    assert not np.array_equal(a, a2)  # reshuffled per epoch
    a, b = epoch_plan(3, 5, seed=0, epoch=1, serial=True)
    assert list(a) == [0, 1, 2, 0, 1] and list(b) == [0, 1, 2, 3, 4]


def _png(mode, size=(40, 40), **kw):
    arr = {"I;16": np.full(size[::-1], 40000, np.uint16)}.get(mode)
    img = Image.fromarray(arr) if arr is not None else Image.new(mode, size, **kw)
    buf = io.BytesIO()
    img.save(buf, format="PNG" if mode != "CMYK" else "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "RGB"])
@pytest.mark.parametrize("channels", [1, 3])
def test_any_mode_converts_to_the_requested_channels(mode, channels):
    img = decode_image(_png(mode), channels)
    assert img.mode == ("L" if channels == 1 else "RGB")
    if mode == "I;16":  # 16-bit scaled onto 8 bits, not clipped to white
        assert np.asarray(img).max() == round(40000 / 257)


def write_domains(root, bad_files):
    for split in ("trainA", "trainB"):
        (root / split).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (i * 40, 100, 50)).save(root / split / f"good{i}.png")
    for name, data in bad_files.items():
        (root / "trainA" / name).write_bytes(data)


def test_bad_files_are_skipped_counted_and_listed_in_one_warning(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (40, 40), (1, 2, 3)).save(good, format="JPEG")
    jpeg = good.getvalue()
    corrupt = bytearray(jpeg)
    corrupt[200:400] = b"\x00" * 200
    bad = {"zero.png": b"", "notes.png": b"just some text\n", "truncated.jpg": jpeg[: len(jpeg) // 2],
           "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(corrupt[40:60]), "rgba.png": _png("RGBA"),
           "sixteen.png": _png("I;16"), "palette.png": _png("P"), "gray.png": _png("L")}
    write_domains(tmp_path, bad)
    cfg = cfg_for(dataroot=str(tmp_path), load_size=36, crop_size=32)
    with pytest.warns(BadImageWarning) as record:
        ds = UnalignedDataset(cfg)
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 4 unreadable file(s)" in message
    for name in ("zero.png", "notes.png", "truncated.jpg", "corrupt.jpg"):
        assert name in message
    assert ds.skipped == 4
    assert len(ds.A.paths) == 3 + 4 and ds.epoch_length == 7  # the odd modes are converted and kept
    for i in range(len(ds)):
        item = ds[i]
        assert item["A"].shape == (3, 32, 32) and item["B"].shape == (3, 32, 32)


def test_grayscale_domains(tmp_path):
    write_domains(tmp_path, {})
    ds = UnalignedDataset(cfg_for(dataroot=str(tmp_path), input_nc=1, lambda_identity=0, load_size=36,
                                 crop_size=32))
    assert ds[0]["A"].shape == (1, 32, 32) and ds[0]["B"].shape == (3, 32, 32)


def test_a_domain_without_usable_images_fails_naming_the_folder(tmp_path):
    write_domains(tmp_path, {})
    for f in (tmp_path / "trainB").iterdir():
        f.write_bytes(b"not an image")
    with warnings.catch_warnings(), pytest.raises(DataError, match=r"trainB: no usable image"):
        warnings.simplefilter("ignore")
        UnalignedDataset(cfg_for(dataroot=str(tmp_path), load_size=36, crop_size=32))


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=r"trainA: folder does not exist"):
        UnalignedDataset(cfg_for(dataroot=str(tmp_path)))


def test_an_image_smaller_than_the_crop_fails_naming_the_file(tmp_path):
    write_domains(tmp_path, {})
    Image.new("RGB", (20, 50)).save(tmp_path / "trainB" / "narrow.png")
    with pytest.raises(DataError, match=r"narrow.png: image is 20x50, smaller than crop_size 32"):
        UnalignedDataset(cfg_for(dataroot=str(tmp_path), preprocess="crop", crop_size=32))


def test_direction_BtoA_swaps_the_domains(tmp_path):
    write_domains(tmp_path, {})
    (tmp_path / "trainB" / "extra.png").write_bytes(_png("RGB"))
    ds = UnalignedDataset(dataclasses.replace(cfg_for(dataroot=str(tmp_path), load_size=36, crop_size=32),
                                              direction="BtoA"))
    assert all("trainB" in p for p in ds.A.paths) and len(ds.A.paths) == 4


def test_an_image_larger_than_the_limit_is_refused_from_its_header_before_it_is_decoded():
    """A 9500x9500 image was decoded in full (1.46 GB): refused as unreadable, from the header alone."""
    import io
    import struct
    import zlib

    from PIL import Image

    from cyclegan.core.data import BadImage, decode_image
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")  # width and height follow the chunk type; the CRC covers type and data
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", 9500, 9500)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    with pytest.raises(BadImage, match=r"^big.png: 9500x9500 pixels, more than the 8192x8192 an image may have$"):
        decode_image(bytes(data), 3, "big.png")
