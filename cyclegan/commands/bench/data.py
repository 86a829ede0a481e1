"""``cyclegan bench --data URI``: images/s of read + decode + crop + flip, Ray Data against a plain
DataLoader with PIL on the same number of CPUs, from local disk or object storage."""
from __future__ import annotations

import json
import os
import time

import torch

from ...core.config import Config
from ...core.data import decode_image, normalize, preprocess, sample_rng
from ...core.storage import Storage, is_remote
from ...distributed.runtime import init_ray, quiet_data
from ...distributed.streams import list_objects, preprocessed_images


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, cfg, root, store):
        self.paths, self.cfg, self.root, self.store = paths, cfg, root, store

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = decode_image(self.store.read_bytes(self.root, listed=self.paths[i]), self.cfg.input_nc, self.paths[i])
        return torch.from_numpy(preprocess(img, self.cfg, sample_rng(self.cfg.seed, 0, i, 0)))


def bench_data(cfg: Config, uri: str, batch_size: int = 32, cpus: int | None = None) -> dict:
    cpus = cpus or os.cpu_count() or 1
    store = Storage.from_options(cfg.storage_options)
    paths = list_objects(uri, store, cfg.max_dataset_size)
    init_ray(cfg.address, num_cpus=cpus)
    quiet_data()
    figures = {"images": len(paths), "cpus": cpus, "crop_size": cfg.crop_size, "load_size": cfg.load_size,
               "source": "object storage" if is_remote(uri) else "local disk"}

    def steady_rate(batches) -> tuple[float, float]:
        """(images/s after the first batch, seconds to the first batch): start-up apart from throughput."""
        t0 = time.perf_counter()
        first = None
        seen = 0
        for batch in batches:
            if first is None:
                first = time.perf_counter()
            else:
                seen += len(batch)
        return seen / (time.perf_counter() - first), first - t0

    figures["ray_data_images_per_sec"], figures["ray_data_first_batch_s"] = steady_rate(
        normalize(b["image"]) for b in preprocessed_images(paths, cfg, uri, store, batch_size, cpus)
        .iter_torch_batches(batch_size=batch_size))

    # A DataLoader's workers must not inherit a filesystem client from this process: spawn them.
    loader = torch.utils.data.DataLoader(_Files(paths, cfg, uri, store), batch_size=batch_size,
                                         num_workers=cpus, multiprocessing_context="spawn")
    figures["dataloader_images_per_sec"], figures["dataloader_first_batch_s"] = steady_rate(loader)
    figures["ratio"] = figures["ray_data_images_per_sec"] / figures["dataloader_images_per_sec"]
    print(f"{figures['source']}: Ray Data {figures['ray_data_images_per_sec']:.1f} images/s, DataLoader+PIL "
          f"{figures['dataloader_images_per_sec']:.1f} images/s ({cpus} CPUs, {len(paths)} images)")
    print(json.dumps(figures), flush=True)
    return figures


