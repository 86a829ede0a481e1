"""``cyclegan bench --data URI``: images/s of read + decode + crop + flip, Ray Data against a plain
DataLoader with PIL on the same number of CPUs, from local disk or object storage."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from ..config import Config
from ..data import decode_image, normalize, preprocess, preprocess_uint8, sample_rng
from ..storage import Storage, is_remote
from .runtime import init_ray, quiet_data
from .streams import list_objects


def _decode_batch(batch: dict, cfg_dict: dict, root: str, store: Storage) -> dict:
    from ..config import from_dict
    cfg = from_dict(cfg_dict)
    images = [preprocess_uint8(decode_image(store.read_bytes(root, listed=p), cfg.input_nc, p), cfg,
                         sample_rng(cfg.seed, 0, int(i), 0)) for i, p in zip(batch["i"], batch["path"])]
    return {"image": np.stack(images)}


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, cfg, root, store):
        self.paths, self.cfg, self.root, self.store = paths, cfg, root, store

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = decode_image(self.store.read_bytes(self.root, listed=self.paths[i]), self.cfg.input_nc, self.paths[i])
        return torch.from_numpy(preprocess(img, self.cfg, sample_rng(self.cfg.seed, 0, i, 0)))


def bench_data(cfg: Config, uri: str, batch_size: int = 32, cpus: int | None = None) -> dict:
    import ray
    import ray.data
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

    ds = ray.data.from_items([{"i": i, "path": p} for i, p in enumerate(paths)],
                             override_num_blocks=max(cpus * 2, len(paths) // 64)).map_batches(
        _decode_batch, batch_size=batch_size,
        fn_kwargs={"cfg_dict": cfg.to_dict(), "root": uri, "store": store})
    figures["ray_data_images_per_sec"], figures["ray_data_first_batch_s"] = steady_rate(
        normalize(b["image"]) for b in ds.iter_torch_batches(batch_size=batch_size))

    # A DataLoader's workers must not inherit a filesystem client from this process: spawn them.
    loader = torch.utils.data.DataLoader(_Files(paths, cfg, uri, store), batch_size=batch_size,
                                         num_workers=cpus, multiprocessing_context="spawn")
    figures["dataloader_images_per_sec"], figures["dataloader_first_batch_s"] = steady_rate(loader)
    figures["ratio"] = figures["ray_data_images_per_sec"] / figures["dataloader_images_per_sec"]
    print(f"{figures['source']}: Ray Data {figures['ray_data_images_per_sec']:.1f} images/s, DataLoader+PIL "
          f"{figures['dataloader_images_per_sec']:.1f} images/s ({cpus} CPUs, {len(paths)} images)")
    print(json.dumps(figures), flush=True)
    return figures


def bench_ingest(cfg: Config) -> dict:
    """``cyclegan bench --ingest``: the Ray Train run ``cfg`` describes, once on streamed data and once on
    batches each worker holds in memory before it trains (same options otherwise); prints where the
    training loop's time went. Runs in a temporary storage folder, removed after."""
    import dataclasses
    import shutil
    import tempfile

    from .train import fit
    figures: dict = {"num_workers": cfg.num_workers, "data_ingest": cfg.data_ingest,
                     "cpus_per_worker": cfg.cpus_per_worker}
    store = Storage.from_options(cfg.storage_options)
    storage = tempfile.mkdtemp(prefix="cyclegan-bench-ingest-")
    try:
        for mode, in_memory in (("streamed", False), ("in_memory", True)):
            run = dataclasses.replace(cfg, storage_path=storage, name=f"bench-{mode}")
            fit(run, store, progress_bar=False, in_memory=in_memory)
            result = json.loads(store.read_text(f"{storage}/{run.name}/result.json"))
            waits = result["epoch_first_batch_wait"]
            first = waits[min(waits, key=int)]  # the data pipeline's start, in the first epoch's wait
            images = result["images_per_sec"] * result["train_seconds"]
            figures[mode] = {"images_per_sec": result["images_per_sec"], "train_seconds": result["train_seconds"],
                             "images_per_sec_after_first_batch": images / (result["train_seconds"] - first),
                             "data_wait_seconds": result["data_wait_seconds"],
                             "first_epoch_first_batch_wait": first,
                             "later_epochs_first_batch_wait_max": max(
                                 [w for e, w in waits.items() if e != min(waits, key=int)], default=0.0)}
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    streamed, held = figures["streamed"], figures["in_memory"]
    figures["streamed_over_in_memory"] = streamed["images_per_sec"] / held["images_per_sec"]
    figures["after_first_batch_streamed_over_in_memory"] = (streamed["images_per_sec_after_first_batch"]
                                                            / held["images_per_sec_after_first_batch"])
    print(f"{cfg.num_workers} worker(s), --data_ingest {cfg.data_ingest}: {streamed['images_per_sec']:.2f} images/s "
          f"streamed, {held['images_per_sec']:.2f} in memory (ratio {figures['streamed_over_in_memory']:.3f}, "
          f"{figures['after_first_batch_streamed_over_in_memory']:.3f} after the first batch); "
          f"waited for data {streamed['data_wait_seconds']:.2f} s of {streamed['train_seconds']:.1f} s; "
          f"at epoch boundaries at most {streamed['later_epochs_first_batch_wait_max']:.3f} s")
    print(json.dumps(figures), flush=True)
    return figures
