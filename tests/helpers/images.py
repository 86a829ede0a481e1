"""Small image folders written for a test: distinct images by name, and folders mixed with files that are
no images (what a user's dataset folder may hold)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

NON_IMAGES = {"README.txt": b"about", "Thumbs.db": b"\0\1", "labels.csv": b"x,y\n", ".DS_Store": b"\0",
              "broken.png": b"not a png"}  # the last: an image's name, bytes that fail to decode


def write_images(folder: Path, names, size=(30, 30), green=90) -> None:
    """One PNG per name, each its own colour (red 20 x its index; ``green`` sets the folder apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", size, (20 * i, green, 160)).save(folder / name, format="PNG")


def write_mixed_pair(root: Path) -> None:
    """trainA and trainB, each 4 images under names of every case and extension beside NON_IMAGES."""
    for split in ("trainA", "trainB"):
        write_images(root / split, ["A0.JPG", "a1.png", "a2.Png", "a3.tiff"])
        for name, data in NON_IMAGES.items():
            (root / split / name).write_bytes(data)
