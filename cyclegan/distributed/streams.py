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
from ..core.stored import read_json

log = logging.getLogger("cyclegan")
LOAD_TASK_CPUS = 0.25  # a task that reads, decodes and augments a batch of pairs (the run checks room for one)
CHUNK = 16  # samples loaded by one task
MAX_BLOCKS = 1024  # of a stream's list of chunks: a longer run's go several to a block (and task)


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
MAX_MANIFEST_BYTES = 1 << 30  # a scan of millions of objects: its paths and sizes


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
        return [tuple(row) for row in read_json(store, uri, limit=MAX_MANIFEST_BYTES)["images"]]
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


Span = tuple[int, int, int]  # (epoch, first, end): the samples k in [first, end) of the epoch's pairing plan


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


def chunk_blocks(spans: list[Span], max_blocks: int = MAX_BLOCKS) -> list[dict]:
    """The spans as runs of up to CHUNK consecutive samples (epoch, lo, hi: 24 bytes for 16 samples), in
    order, grouped into at most about ``max_blocks`` Ray Data blocks of one row each (arrays ``epoch``,
    ``lo``, ``hi``): a block is an object and a task, about 13 KB of memory where it is made, and a long
    run listed one chunk a block (20,000 images x 50 epochs: 62,500) took 0.8 GiB and 45 s before its
    first batch. The first blocks hold 1, 2, 4, ... chunks, so the first batch comes after one chunk's
    load however long the run."""
    parts = [(np.full(len(lo), epoch, np.int64), lo, np.minimum(lo + CHUNK, end)) for epoch, first, end in spans
             if len(lo := np.arange(first, end, CHUNK, dtype=np.int64))]
    if not parts:
        return []
    epochs, los, his = (np.concatenate(column) for column in zip(*parts))
    per_block = max(1, math.ceil(len(los) / max_blocks))
    blocks, at, size = [], 0, 1
    while at < len(los):
        end = min(at + size, len(los))
        blocks.append({"epoch": epochs[at:end], "lo": los[at:end], "hi": his[at:end]})
        at, size = end, min(size * 2, per_block)
    return blocks


def _load_chunks(batch: dict, cfg_dict: dict, domains: RemoteDomains, store: Storage, offset: int, stride: int):
    """A block's chunks loaded one by one (a long run's blocks hold many)."""
    cfg = from_dict(cfg_dict)
    for epochs, los, his in zip(batch["epoch"], batch["lo"], batch["hi"]):
        for e, lo, hi in zip(epochs, los, his):
            yield load_samples(cfg, domains, store, [(int(e), offset + stride * k) for k in range(int(lo), int(hi))])


def samples_dataset(spans: list[Span], domains: RemoteDomains, cfg: Config, store: Storage, offset: int = 0,
                    stride: int = 1):
    """The samples ``offset + stride * k`` of the spans' epochs' plans, loaded by Ray Data tasks, a chunk
    (up to CHUNK samples) at a time."""
    import ray.data
    # Items, not ray.data.range: its read tasks would each ask for a whole CPU, which a node full of
    # training workers may not have (and not from_arrow: three times slower to make the blocks).
    blocks = chunk_blocks(spans)
    return ray.data.from_items(blocks, override_num_blocks=max(1, len(blocks))).map_batches(
        _load_chunks, batch_size=None, num_cpus=LOAD_TASK_CPUS,
        fn_kwargs={"cfg_dict": cfg.to_dict(), "domains": domains, "store": store, "offset": offset, "stride": stride})


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


def worker_spans(domains: RemoteDomains, epoch: int, start: int, world_size: int, last_epoch: int) -> list[Span]:
    """--data_ingest exact: a worker's samples from its sample ``start`` of ``epoch`` to the end of
    ``last_epoch``: in each epoch it takes every world_size-th sample of the plan from its rank on
    (index rank + world_size * k), k from 0 to samples_per_worker."""
    per_epoch = samples_per_worker(domains, world_size)
    epoch, start = epoch + start // per_epoch, start % per_epoch  # an epoch already done by a resized group
    return [(e, start if e == epoch else 0, per_epoch) for e in range(epoch, last_epoch + 1)]


def worker_batches(domains: RemoteDomains, cfg: Config, store: Storage, epoch: int, start: int, rank: int,
                   world_size: int, last_epoch: Optional[int] = None,
                   prefetch_batches: int = 2) -> Iterator[tuple[int, dict]]:
    """--data_ingest exact: this worker's batches from sample ``start`` of ``epoch`` to the end of
    ``last_epoch`` (default: the run's last), as (epoch, batch), in plan order: one Ray Data stream of its
    own for all of them, so an epoch boundary costs nothing (a stream per epoch cost 3-4 s of start-up
    each time)."""
    spans = worker_spans(domains, epoch, start, world_size, last_epoch or cfg.total_epochs)
    if not any(first < end for _, first, end in spans):
        return
    ds = samples_dataset(spans, domains, cfg, store, offset=rank, stride=world_size)
    ds.context.execution_options.preserve_order = True  # plan order: what makes a run reproducible
    blocks = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=prefetch_batches)
    yield from cut_batches(blocks, cfg, epoch, start, samples_per_worker(domains, world_size))


def remaining_spans(domains: RemoteDomains, epochs: list[int], epoch: int, start: int, world_size: int) -> list[Span]:
    """--data_ingest train: what a group of ``world_size`` workers has left to train on, from each
    worker's sample ``start`` of ``epoch``: the samples (index in the plan) of every epoch in ``epochs``
    from there on. Each epoch has world_size x samples_per_worker of them (the rest of the plan is
    dropped, as with exact ingest), so an equal split gives every worker the same steps."""
    used = world_size * samples_per_worker(domains, world_size)
    spans = [(e, min(world_size * start, used) if e == epoch else 0, used) for e in epochs if e >= epoch]
    return [span for span in spans if span[1] < span[2]]



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
