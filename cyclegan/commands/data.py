"""``cyclegan data download`` and ``cyclegan data upload``: the standard CycleGAN datasets by name, and
local datasets copied to object storage (a download with a progress bar).

The published datasets are one zip per name (``<base>/<name>.zip``, holding ``<name>/trainA`` ...), the
files the reference's ``download_cyclegan_dataset.sh`` fetches. ``$CYCLEGAN_DATASETS_URL`` (or
``--url``) points elsewhere: a mirror, an ``http://`` server or a ``file://`` folder.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

from tqdm import tqdm

from ..core.data import is_image_name
from ..core.errors import DataError
from ..core.storage import Storage, is_remote, storage_error
from . import COMMANDS

DATASETS_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
DATASETS = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
            "ukiyoe2photo", "vangogh2photo", "maps", "cityscapes", "facades", "iphone2dslr_flower", "ae_photos")
SPLITS = ("trainA", "trainB", "testA", "testB")
MAX_LISTED = 20  # skipped files named in upload's warning; the rest counted
log = logging.getLogger("cyclegan")


def _fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {url.rsplit('/', 1)[-1]}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"{url}: download failed ({getattr(e, 'reason', e)})") from None


def _safe_members(archive: zipfile.ZipFile, url: str) -> list[zipfile.ZipInfo]:
    """Entries whose paths stay inside the output folder (no absolute paths, no '..')."""
    members = []
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or ".." in parts or ":" in info.filename:
            raise DataError(f"{url}: unsafe path {info.filename!r} in the archive; nothing was extracted")
        members.append(info)
    return members


def download(name: str, out: str, base_url: Optional[str] = None, store: Optional[Storage] = None) -> str:
    """Fetch ``<name>.zip`` and put ``<out>/<name>/{trainA,trainB,testA,testB}`` in place (a folder or an
    s3:// prefix). Returns where the dataset now is."""
    if name not in DATASETS:
        raise DataError(f"dataset: {name!r} is not one of {', '.join(DATASETS)}")
    base = (base_url or os.environ.get("CYCLEGAN_DATASETS_URL") or DATASETS_URL).rstrip("/")
    url = f"{base}/{name}.zip"
    with tempfile.TemporaryDirectory(prefix="cyclegan-download-") as tmp:
        archive_path = Path(tmp) / f"{name}.zip"
        _fetch(url, archive_path)
        try:
            archive = zipfile.ZipFile(archive_path)
        except zipfile.BadZipFile:
            raise DataError(f"{url}: not a zip archive") from None
        with archive:
            members = _safe_members(archive, url)
            extracted = Path(tmp) / "x"
            for info in tqdm(members, unit="file", desc=f"extract {name}"):
                archive.extract(info, extracted)
        # The published archives hold <name>/trainA ...; accept the splits at the top level too.
        root = extracted / name if (extracted / name).is_dir() else extracted
        missing = [s for s in ("trainA", "trainB") if not (root / s).is_dir()]
        if missing:
            raise DataError(f"{url}: no {', '.join(missing)} folder in the archive (not an unaligned dataset)")
        target = f"{str(out).rstrip('/')}/{name}"
        if is_remote(out):
            upload(str(root), target, store)
        else:
            dest = Path(target)
            if dest.exists():
                raise DataError(f"{dest}: already exists; remove it or choose another --out")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(root), dest)
    return target


def dataset_files(root: Path) -> tuple[list[Path], list[str]]:
    """What ``upload`` copies from ``root``: the image files of the splits (other files are no part of a
    dataset; a link to an image file is read as that file) and a built-in pair's ``pair.json``; and why each
    file named like one was left out: a link to a file outside ``root`` (``trainA/cover.png`` linked to
    ~/.aws/credentials would upload the credentials), or a file that is no image by its first bytes."""
    inside = root.resolve()
    named = sorted(p for split in SPLITS + ("ideal",) if (root / split).is_dir()
                   for p in (root / split).rglob("*") if p.is_file() and is_image_name(p.name))
    pair = [p for p in (root / "pair.json",) if p.is_file()]
    files, skipped = [], []
    for path in named + pair:
        if not path.resolve().is_relative_to(inside):
            skipped.append(f"{path}: links to a file outside {root}")
        elif path not in pair and not _is_image(path):
            skipped.append(f"{path}: not an image (its first bytes are no image format)")
        else:
            files.append(path)
    return files, skipped


def _warn_skipped(skipped: list[str]) -> None:
    if skipped:
        more = [f"... and {len(skipped) - MAX_LISTED} more"] if len(skipped) > MAX_LISTED else []
        log.warning("skipped %d file(s), not copied:\n  %s", len(skipped), "\n  ".join(skipped[:MAX_LISTED] + more))


def _is_image(path: Path) -> bool:
    """Whether PIL knows the file's format from its header (it reads the first bytes, decodes nothing)."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            return bool(img.format)
    except Exception:  # PIL raises many types for what is not an image
        return False


def upload(folder: str, uri: str, store: Optional[Storage] = None) -> int:
    """Copy a local dataset in the unaligned layout (trainA, trainB, and testA/testB if present) to an
    s3:// or gs:// prefix. Returns the number of files copied."""
    root = Path(folder)
    if not is_remote(uri):
        raise DataError(f"{uri}: upload needs an s3:// or gs:// destination")
    missing = [s for s in ("trainA", "trainB") if not (root / s).is_dir()]
    if missing:
        raise DataError(f"{root}: no {', '.join(missing)} folder (expected trainA, trainB, testA, testB)")
    files, skipped = dataset_files(root)
    _warn_skipped(skipped)
    store = store or Storage.from_options()
    # The chosen files as links in a scratch folder of the same layout, copied by pyarrow's multithreaded
    # copy (a link is read as its file): many small images upload in parallel, not one after another.
    with tempfile.TemporaryDirectory(prefix="cyclegan-upload-") as stage:
        for path in files:
            link = Path(stage) / path.relative_to(root)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
        log.info("uploading %d files (%.1f MB) to %s", len(files), sum(p.stat().st_size for p in files) / 1e6, uri)
        try:
            store.make_folder(uri)
            store.copy_folder(stage, uri)
        except OSError as e:
            raise storage_error(uri, e, "upload failed") from None
    return len(files)


def add_parser(sub) -> None:
    from ..core.synth import PAIRS
    p = sub.add_parser("data", help=COMMANDS["data"], description=__doc__)
    data_sub = p.add_subparsers(dest="data_command", required=True)
    s = data_sub.add_parser("synth", help="write a built-in domain pair (offline, deterministic)")
    s.add_argument("pair", choices=sorted(PAIRS), help="; ".join(f"{k}: {v[2]}" for k, v in PAIRS.items()))
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--size", type=int, default=64, help="image size in pixels (default: 64)")
    s.add_argument("--n_train", type=int, default=200, help="training images per domain (default: 200)")
    s.add_argument("--n_test", type=int, default=20, help="test images per domain (default: 20)")
    s.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    s.set_defaults(run=run_synth)
    d = data_sub.add_parser("download", help="fetch a standard CycleGAN dataset by name (the published zip)")
    d.add_argument("name", choices=DATASETS)
    d.add_argument("--out", required=True, help="parent folder or s3:// prefix; the dataset lands in <out>/<name>")
    d.add_argument("--url", help="base URL of the zips (default: $CYCLEGAN_DATASETS_URL or the published site)")
    d.set_defaults(run=run_download)
    u = data_sub.add_parser("upload", help="copy a local dataset (trainA, trainB, testA, testB) to s3:// or gs://")
    u.add_argument("folder")
    u.add_argument("uri")
    u.set_defaults(run=run_upload)


def run_synth(args: argparse.Namespace) -> int:
    from ..core.synth import write_pair
    out = write_pair(args.pair, args.out, size=args.size, n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    print(f"wrote built-in pair {args.pair!r} to {out}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    where = download(args.name, args.out, base_url=args.url)
    print(f"dataset {args.name!r} is in {where}")
    return 0


def run_upload(args: argparse.Namespace) -> int:
    count = upload(args.folder, args.uri)
    print(f"copied {count} files to {args.uri}")
    return 0
