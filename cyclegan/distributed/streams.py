"""Domains A and B as Ray Data streams, from local disk or object storage.

The core's pairing plan (``data.epoch_plan``) decides which A and B image every sample of an
epoch uses, from (seed, epoch) alone; Ray Data tasks read, decode and augment samples (the core's
``decode_image`` and ``preprocess``) in parallel, off the training workers. With --data_ingest exact
each worker takes every world_size-th sample of the plan in a stream of its own, in plan order, so a
distributed run is reproducible and resumes mid-epoch exactly, like a local one; with --data_ingest
train the run's samples are one dataset that Ray Train splits among the workers (see ``ingest``).

Undecodable objects are found once at start by a parallel scan (also a Ray Data job), skipped,
counted and listed; they never reach an epoch, so every worker takes the same number of steps. The
scan's outcome is kept in storage as a manifest of the listing and reused while the listing is the same.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import pyarrow.fs as pafs

from ..core.config import Config, from_dict
from ..core.data import (
    BadImage,
    DataError,
    Domain,
    collect_domain,
    decode_image,
    domain_folders,
    epoch_plan,
    first_images,
    normalize,
    preprocess_uint8,
    sample_rng,
    warn_skipped,
)
from ..core.storage import Storage

log = logging.getLogger("cyclegan")
LOAD_TASK_CPUS = 0.25  # a task that reads, decodes and augments a batch of pairs (the run checks room for one)
CHUNK = 16  # samples loaded by one task


@dataclass
class RemoteDomains:
    """What the core trainer needs to know of a dataset: both domains, their epoch length, skips."""
    A: Domain
    B: Domain
    skipped: int

    @property
    def epoch_length(self) -> int:
        return max(len(self.A.paths), len(self.B.paths))


def list_objects(uri: str, store: Storage, max_size: float = math.inf) -> list[str]:
    return [path for path, _, _ in list_with_versions(uri, store, max_size)]


def list_with_versions(uri: str, store: Storage, max_size: float = math.inf) -> list[tuple[str, int, int]]:
    """(path, size, modification time in ns) of the images under ``uri``, the local listing's rule: images
    only, sorted, then max_dataset_size."""
    infos = {i.path: i for i in store.list_files(uri) if i.type == pafs.FileType.File}
    if not infos:
        raise DataError(f"{uri}: no objects under this prefix")
    return [(path, infos[path].size, infos[path].mtime_ns or 0) for path in first_images(list(infos), max_size)]


class MissingOnNode(DataError):
    """A listed file that this node cannot see: its disk is not the driver's."""


def read_listed(store: Storage, root_uri: str, path: str) -> bytes:
    """An object the driver listed, read here: missing here means this node has another disk (a local
    dataroot on a cluster), never an unreadable image."""
    try:
        return store.read_bytes(root_uri, listed=path)
    except FileNotFoundError:
        import ray.util
        raise MissingOnNode(f"{path}: listed by the driver but not found on node {ray.util.get_node_ip_address()}: "
                        f"a local dataroot must be on every node (upload it with 'cyclegan data upload', or "
                        f"mount it everywhere and pass --shared_filesystem)") from None


def _probe(batch: dict, root_uri: str, store: Storage, channels: int) -> dict:
    widths, heights, reasons, missing = [], [], [], []
    for path in batch["path"]:
        width = height = 0
        reason = lost = ""
        try:
            img = decode_image(read_listed(store, root_uri, path), channels, path)
            width, height = img.size
        except MissingOnNode as e:  # not on this node's disk: the scan fails, naming it
            lost = str(e)
        except (BadImage, DataError, OSError) as e:  # unreadable (refused, say): skipped and counted
            reason = str(e)
        widths.append(width); heights.append(height); reasons.append(reason); missing.append(lost)
    return {"path": batch["path"], "width": np.array(widths), "height": np.array(heights),
            "reason": np.array(reasons, dtype=object), "missing": np.array(missing, dtype=object)}


SCANS = "_scans"  # below a run's (or a sweep's) storage: one manifest per listing scanned


def scan(uri: str, channels: int, cfg: Config, store: Storage, manifests: Optional[str] = None) -> Domain:
    """Decode every object once, in parallel Ray tasks: keep the good, record the bad; a listed object that
    a task's node cannot find stops the run (a local folder that is not on every node).

    With ``manifests`` (a folder or prefix), the outcome is kept there as a manifest named after the
    listing (every path, size and modification time) and reused while the listing is unchanged: by
    --resume, by every trial of a sweep's pair, by later runs on the same data."""
    listed = list_with_versions(uri, store, cfg.max_dataset_size)
    key = hashlib.sha256(json.dumps({"uri": uri, "channels": channels, "listed": listed}).encode()).hexdigest()
    manifest = f"{manifests}/{SCANS}/{key[:32]}.json" if manifests else None
    rows = read_manifest(store, manifest) if manifest else None
    if rows is None:
        import ray.data
        probed = ray.data.from_items([{"path": p} for p, _, _ in listed]).map_batches(
            _probe, batch_size=16, fn_kwargs={"root_uri": uri, "store": store, "channels": channels},
            num_cpus=0.5).take_all()
        lost = [r["missing"] for r in probed if r["missing"]]
        if lost:
            raise DataError(f"{lost[0]}" + (f" ({len(lost) - 1} more like it)" if len(lost) > 1 else ""))
        rows = sorted((r["path"], None if r["reason"] else [int(r["width"]), int(r["height"])], r["reason"] or None)
                      for r in probed)
        if manifest:
            store.write_text(manifest, json.dumps({"uri": uri, "channels": channels, "images": rows}))
    else:
        log.info("%s: %d objects as scanned before (%s)", uri, len(rows), manifest)
    return collect_domain(uri, [(path, tuple(size) if size else None, reason) for path, size, reason in rows],
                          cfg, noun="objects")


def read_manifest(store: Storage, uri: str) -> Optional[list]:
    """A scan's outcome, or None when there is none (or it is unreadable: then the data is scanned again)."""
    if not store.exists(uri):
        return None
    try:
        return [tuple(row) for row in json.loads(store.read_text(uri))["images"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s: unreadable scan manifest (%s); scanning again", uri, e)
        return None


def scan_domains(cfg: Config, store: Storage, manifests: Optional[str] = None) -> RemoteDomains:
    root = cfg.dataroot.rstrip("/")
    folder_A, folder_B = domain_folders(cfg)
    a = scan(f"{root}/{folder_A}", cfg.input_nc, cfg, store, manifests)
    b = scan(f"{root}/{folder_B}", cfg.output_nc, cfg, store, manifests)
    return RemoteDomains(a, b, warn_skipped([a, b]))


def samples_per_worker(domains: RemoteDomains, world_size: int) -> int:
    """Every worker takes the same number of samples (the remainder of an epoch is dropped)."""
    return domains.epoch_length // world_size


@dataclass(frozen=True)
class WorkerPlan:
    """Which sample a worker trains on at each position of its stream: position j (from 0) is its
    ``start + j``-th sample from the beginning of ``first_epoch``; in each epoch the worker takes every
    ``world_size``-th sample of the pairing plan, from ``rank`` on. A pure function of the run's seed and
    these numbers, so any position of any epoch can be computed (and replayed) anywhere."""
    first_epoch: int
    start: int
    per_epoch: int  # samples of each epoch this worker takes
    rank: int
    world_size: int

    def locate(self, position: int) -> tuple[int, int]:
        """(epoch, index in the epoch's plan) of a stream position."""
        epoch, k = divmod(self.start + position, self.per_epoch)
        return self.first_epoch + epoch, self.rank + self.world_size * k


def load_samples(cfg: Config, domains: RemoteDomains, store: Storage, samples) -> dict:
    """Read, decode and augment samples given as (epoch, index in the epoch's pairing plan): what a
    sample is depends on these two numbers and the seed alone, wherever and whenever it is loaded."""
    pairings: dict[int, tuple] = {}
    out_A, out_B = [], []
    for epoch, i in samples:
        if epoch not in pairings:
            pairings[epoch] = epoch_plan(len(domains.A.paths), len(domains.B.paths), cfg.seed, epoch,
                                         cfg.serial_batches, cfg.direction)
        a_idx, b_idx = pairings[epoch]
        a_path, b_path = domains.A.paths[a_idx[i]], domains.B.paths[b_idx[i]]
        a = decode_image(read_listed(store, domains.A.folder, a_path), cfg.input_nc, a_path)
        b = decode_image(read_listed(store, domains.B.folder, b_path), cfg.output_nc, b_path)
        out_A.append(preprocess_uint8(a, cfg, sample_rng(cfg.seed, epoch, i, 0)))
        out_B.append(preprocess_uint8(b, cfg, sample_rng(cfg.seed, epoch, i, 1)))
    return {"A": np.stack(out_A), "B": np.stack(out_B)}


def _load_positions(batch: dict, cfg_dict: dict, plan: WorkerPlan, domains: RemoteDomains, store: Storage) -> dict:
    return load_samples(from_dict(cfg_dict), domains, store, [plan.locate(int(j)) for j in batch["id"]])


def _load_chunks(batch: dict, cfg_dict: dict, domains: RemoteDomains, store: Storage) -> dict:
    samples = [(int(e), i) for e, lo, hi in zip(batch["epoch"], batch["lo"], batch["hi"]) for i in range(lo, hi)]
    return load_samples(from_dict(cfg_dict), domains, store, samples)


def cut_batches(blocks: Iterator[dict], cfg: Config, epoch: int, start: int,
                per_epoch: int) -> Iterator[tuple[int, dict]]:
    """A worker's samples (blocks of uint8 A and B, in the order they come) as (epoch, batch): the
    first ``per_epoch - start`` samples belong to ``epoch``, every ``per_epoch`` after to the next. Batches
    hold up to batch_size samples of one epoch (an epoch's last batch may be smaller), as the local
    loader's, so every worker takes the same steps."""
    epoch, start = epoch + start // per_epoch, start % per_epoch  # an epoch already done by a resized group
    left, A, B = per_epoch - start, [], []

    import torch  # in the training worker; the tasks that load the blocks never import it

    def batch():  # uint8 until here: 4x fewer bytes through the object store
        return epoch, {"A": normalize(torch.from_numpy(np.stack(A))), "B": normalize(torch.from_numpy(np.stack(B)))}
    for block in blocks:
        for a, b in zip(block["A"], block["B"]):
            A.append(a)
            B.append(b)
            left -= 1
            if left == 0 or len(A) == cfg.batch_size:
                yield batch()
                A, B = [], []
            if left == 0:
                epoch, left = epoch + 1, per_epoch
    if A:
        yield batch()


def worker_batches(domains: RemoteDomains, cfg: Config, store: Storage, epoch: int, start: int, rank: int,
                   world_size: int, last_epoch: Optional[int] = None,
                   prefetch_batches: int = 2) -> Iterator[tuple[int, dict]]:
    """--data_ingest exact: this worker's batches from sample ``start`` of ``epoch`` to the end of
    ``last_epoch`` (default: the run's last), as (epoch, batch), in plan order: one Ray Data stream of its
    own for all of them, so an epoch boundary costs nothing (a stream per epoch cost 3-4 s of start-up
    each time)."""
    import ray.data
    plan = WorkerPlan(epoch, start, samples_per_worker(domains, world_size), rank, world_size)
    total = ((last_epoch or cfg.total_epochs) - epoch + 1) * plan.per_epoch - start
    if total <= 0:
        return
    # The positions as items, not ray.data.range: its read tasks would each ask for a whole CPU, which a
    # node full of training workers may not have.
    positions = [{"id": j} for j in range(total)]
    ds = ray.data.from_items(positions, override_num_blocks=max(1, math.ceil(total / CHUNK))).map_batches(
        _load_positions, batch_size=CHUNK, num_cpus=LOAD_TASK_CPUS,
        fn_kwargs={"cfg_dict": cfg.to_dict(), "plan": plan, "domains": domains, "store": store})
    ds.context.execution_options.preserve_order = True  # plan order: what makes a run reproducible
    blocks = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=prefetch_batches)
    yield from cut_batches(blocks, cfg, epoch, start, plan.per_epoch)


def remaining_chunks(domains: RemoteDomains, cfg: Config, epochs: list[int], epoch: int, start: int,
                     world_size: int) -> list[dict]:
    """--data_ingest train: what a group of ``world_size`` workers has left to train on, from each
    worker's sample ``start`` of ``epoch``: the samples (epoch, index in its plan) of every epoch in
    ``epochs`` from there on, as runs of up to CHUNK consecutive indices. Each epoch has world_size x
    samples_per_worker of them (the rest of the plan is dropped, as with exact ingest), so an equal
    split gives every worker the same steps."""
    used = world_size * samples_per_worker(domains, world_size)
    chunks = []
    for e in (e for e in epochs if e >= epoch):
        first = world_size * start if e == epoch else 0
        chunks += [{"epoch": e, "lo": lo, "hi": min(lo + CHUNK, used)} for lo in range(first, used, CHUNK)]
    return chunks


def chunks_dataset(chunks: list[dict], domains: RemoteDomains, cfg: Config, store: Storage):
    """The samples of ``chunks`` loaded by Ray Data tasks (one task per chunk), in no fixed order."""
    import ray.data
    return ray.data.from_items(chunks, override_num_blocks=max(1, len(chunks))).map_batches(
        _load_chunks, batch_size=None, num_cpus=LOAD_TASK_CPUS,
        fn_kwargs={"cfg_dict": cfg.to_dict(), "domains": domains, "store": store})


def epoch_batches(domains: RemoteDomains, cfg: Config, store: Storage, epoch: int, start: int, rank: int,
                  world_size: int) -> Iterator[dict]:
    """This worker's batches of ``epoch`` alone, from its sample ``start`` on."""
    for _, batch in worker_batches(domains, cfg, store, epoch, start, rank, world_size, last_epoch=epoch):
        yield batch


def _preprocess_batch(batch: dict, cfg_dict: dict, root: str, store: Storage) -> dict:
    cfg = from_dict(cfg_dict)
    images = [preprocess_uint8(decode_image(store.read_bytes(root, listed=p), cfg.input_nc, p), cfg,
                               sample_rng(cfg.seed, 0, int(i), 0)) for i, p in zip(batch["i"], batch["path"])]
    return {"image": np.stack(images)}


def preprocessed_images(paths: list[str], cfg: Config, root: str, store: Storage, batch_size: int, cpus: int):
    """A Ray dataset of the listed images read, decoded and preprocessed as training does, uint8
    (``cyclegan bench --data``: what a worker's stream does, without the pairing)."""
    import ray.data
    return ray.data.from_items([{"i": i, "path": p} for i, p in enumerate(paths)],
                               override_num_blocks=max(cpus * 2, len(paths) // 64)).map_batches(
        _preprocess_batch, batch_size=batch_size, fn_kwargs={"cfg_dict": cfg.to_dict(), "root": root, "store": store})
