"""``cyclegan bench --ingest``: a Ray Train run on streamed data against the same run on batches held in
memory: images/s and where the loop waited."""
from __future__ import annotations

import json

from ...core.config import Config
from ...core.storage import Storage


def bench_ingest(cfg: Config) -> dict:
    """``cyclegan bench --ingest``: the Ray Train run ``cfg`` describes, once on streamed data and once on
    batches each worker holds in memory before it trains (same options otherwise); prints where the
    training loop's time went. Runs in a temporary storage folder, removed after."""
    import dataclasses
    import shutil
    import tempfile

    from ...distributed.train import fit
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
