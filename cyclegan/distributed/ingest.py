"""--data_ingest train: one dataset for the whole run, split among the workers by Ray Train.

The run hands Ray Train the list of its epochs (``TorchTrainer(datasets={"pairs": ...})``). Each time a
worker group starts (the first time, after a failure, after an elastic resize, after ``--resume``), the
first worker reads the checkpoint, writes where the group starts (epoch, samples done per worker, the
group's size) into the run's storage and asks for its shard; ``RemainingSamples.configure`` (Ray
Train's ``DataConfig``, called on that request) turns the epochs left into the samples left, one Ray
Data task per CHUNK, and Train's ``streaming_split`` hands them out (equal counts, locality hints) as the
workers ask. Every worker then reads one stream to the run's end: no stream is built again at an epoch
boundary, and no worker waits for another's slow read.

What it guarantees: each sample's pairing and augmentation are fixed by (seed, epoch, index), and every
sample of an uninterrupted run is trained on once; which worker trains on it, and in what order, is
decided as the run goes. A restart continues at the checkpoint's count of samples done, so samples that
were loaded but not trained on when it was written (a few blocks per worker) may be trained on twice or
not at all. --data_ingest exact gives each worker its own ordered stream instead: bit-identical weights
after any restart, at the price of one Ray Data executor per worker.
"""
from __future__ import annotations

import json
import uuid
from typing import Iterator, Optional

import ray.data
import ray.train

from ..core.config import Config, from_dict
from ..core.storage import Storage
from ..core.stored import read_json
from .streams import RemoteDomains, cut_batches, remaining_spans, samples_dataset, samples_per_worker

PAIRS = "pairs"  # the run's dataset, as Ray Train knows it
START_FILE = "ingest_start.json"  # in the run's storage: where the current worker group starts


def epochs_of(cfg: Config) -> list[int]:
    """The run's epochs, first to last."""
    return list(range(cfg.epoch_count, cfg.total_epochs + 1))


def run_epochs(cfg: Config) -> ray.data.Dataset:
    """The dataset handed to Ray Train: the run's epochs, one row each."""
    return ray.data.from_items([{"epoch": e} for e in epochs_of(cfg)])


def _taken(store: Storage, start_uri: str) -> Optional[str]:
    """The nonce of the start a split was last made from (``<start>.taken``), None before the first."""
    try:
        return read_json(store, f"{start_uri}.taken").get("nonce")
    except FileNotFoundError:
        return None


def take_start(store: Storage, start_uri: str) -> dict:
    """Where the starting group begins, read once: its nonce is marked taken (``<start>.taken``), and a
    start already taken is stale (written for a group before this one), which fails loudly rather than
    splitting the data from the wrong position."""
    start = read_json(store, start_uri)
    taken = _taken(store, start_uri)
    if taken is not None and taken == start.get("nonce"):
        raise RuntimeError(f"{start_uri}: already used by an earlier worker group; the group starting now did not "
                           f"write its own before asking for its data (has Ray Train's call order changed?)")
    store.write_text(f"{start_uri}.taken", json.dumps({"nonce": start.get("nonce")}))
    return start


def check_taken(store: Storage, start_uri: str, nonce: str) -> None:
    """After the first worker's shard request: the split was made from the start it wrote. Ray Train V2
    calls DataConfig.configure lazily, on that request (a behaviour of Ray's this module relies on: see
    ray_internals.DATA_CONFIGURE_CALLER, checked by tests/distributed/test_ray_internals.py); if it ever
    calls it earlier, the split would come from an older group's position, which this refuses."""
    if _taken(store, start_uri) != nonce:
        raise RuntimeError(f"{start_uri}: the data was split from another start than this worker group's "
                           f"(Ray Train configured the dataset before the first worker wrote where it resumes)")


class RemainingSamples(ray.train.DataConfig):
    """Ray Train's split of the run's data, positioned where the starting worker group resumes: ``configure``
    runs when the first worker asks for its shard, after it wrote where the group starts (see check_taken)."""

    def __init__(self, cfg: Config, domains: RemoteDomains, store: Storage, run_uri: str):
        super().__init__(datasets_to_split="all", enable_shard_locality=True)
        self.cfg_dict, self.domains, self.store, self.start_uri = cfg.to_dict(), domains, store, f"{run_uri}/{START_FILE}"

    def configure(self, datasets: dict, world_size: int, worker_handles, worker_node_ids, **kwargs):
        start = take_start(self.store, self.start_uri)
        if start["world_size"] != world_size:  # written by another group: never split by a stale position
            raise RuntimeError(f"{self.start_uri}: written for {start['world_size']} workers, this group has "
                               f"{world_size}")
        cfg = from_dict(self.cfg_dict)
        # The rows of datasets[PAIRS], from the options they were made of: running that dataset here would
        # be one more Ray task (and maybe a worker process to start) on the way to every group's first batch.
        spans = remaining_spans(self.domains, epochs_of(cfg), start["epoch"], start["epoch_iter"], world_size)
        samples = samples_dataset(spans, self.domains, cfg, self.store)
        return super().configure({PAIRS: samples}, world_size, worker_handles, worker_node_ids, **kwargs)


def shard_batches(cfg: Config, domains: RemoteDomains, store: Storage, run_uri: str, epoch: int, start: int,
                  rank: int, world_size: int, prefetch_batches: int = 2) -> Iterator[tuple[int, dict]]:
    """This worker's batches to the end of the run, from its sample ``start`` of ``epoch`` (where the
    checkpoint it resumed from left off), as (epoch, batch). Every worker calls it at the same point."""
    nonce = uuid.uuid4().hex
    if rank == 0:  # read by RemainingSamples.configure, which this worker's request below calls
        store.write_text(f"{run_uri}/{START_FILE}", json.dumps({"nonce": nonce, "epoch": epoch, "epoch_iter": start,
                                                                "world_size": world_size}))
    shard = ray.train.get_dataset_shard(PAIRS)
    if rank == 0:
        check_taken(store, f"{run_uri}/{START_FILE}", nonce)
    blocks = shard.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=prefetch_batches)
    yield from cut_batches(blocks, cfg, epoch, start, samples_per_worker(domains, world_size))
