"""A Ray Train worker's data (--data_ingest exact and train): which samples each worker is handed, fresh and
after a restart, how they are grouped into Ray Data blocks and cut into batches, and that the batches a
worker streams are the local loader's."""
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclegan.core.config import from_dict
from cyclegan.core.data import Domain, list_files
from cyclegan.core.datasets import UnalignedDataset
from cyclegan.core.storage import Storage
from cyclegan.distributed.streams import (
    CHUNK,
    RemoteDomains,
    chunk_blocks,
    cut_batches,
    list_objects,
    remaining_spans,
    scan_domains,
    worker_spans,
)

from tests.helpers.images import write_images, write_mixed_pair


def small_domains() -> RemoteDomains:
    return RemoteDomains(Domain("A", [f"a{i}" for i in range(11)], [(8, 8)] * 11),
                         Domain("B", [f"b{i}" for i in range(7)], [(8, 8)] * 7), 0)


def test_rays_split_covers_each_epochs_samples_once_and_a_restart_only_what_is_left():
    """--data_ingest train: the samples a worker group is handed, fresh and after a restart (also with
    another number of workers), as (epoch, index in the epoch's plan)."""
    domains = small_domains()
    epochs = [1, 2, 3]

    def samples(spans):
        chunks = [dict(zip(("epoch", "lo", "hi"), map(int, t))) for b in chunk_blocks(spans)
                  for t in zip(b["epoch"], b["lo"], b["hi"])]
        found = [(c["epoch"], i) for c in chunks for i in range(c["lo"], c["hi"])]
        assert len(found) == len(set(found)) and all(c["hi"] - c["lo"] <= 16 for c in chunks)
        return found
    # 11 samples an epoch: 10 used by 2 workers (5 each), as with --data_ingest exact.
    fresh = samples(remaining_spans(domains, epochs, 1, 0, world_size=2))
    assert fresh == [(e, i) for e in epochs for i in range(10)]
    # Each worker had done 3 samples of epoch 2: what is left is equal for both, and nothing before it.
    left = samples(remaining_spans(domains, epochs, 2, 3, world_size=2))
    assert left == [(2, i) for i in range(6, 10)] + [(3, i) for i in range(10)] and len(left) % 2 == 0
    # Three workers after an elastic resize: 3 samples each per epoch (9 of the 11).
    assert samples(remaining_spans(domains, epochs, 3, 1, world_size=3)) == [(3, i) for i in range(3, 9)]
    assert remaining_spans(domains, epochs, 3, 5, world_size=2) == []  # the last epoch done


def test_a_long_runs_sample_list_stays_a_few_thousand_blocks_in_order_with_a_quick_first_one():
    """Issue 25 (11): the list of a run's samples grew a block (an object) per 16 samples, 0.8 GiB and
    45 s before the first batch for 20,000 images x 50 epochs; now at most about MAX_BLOCKS blocks, the
    first ones of 1, 2, 4, ... chunks."""
    spans = [(1, 3 * CHUNK + 5, 10_000)] + [(e, 0, 10_000) for e in range(2, 51)]
    blocks = chunk_blocks(spans, max_blocks=100)
    sizes = [len(b["lo"]) for b in blocks]
    assert sizes[:5] == [1, 2, 4, 8, 16] and max(sizes) <= -(-sum(sizes) // 100) and len(blocks) <= 100 + 8
    rows = [dict(zip(("epoch", "lo", "hi"), map(int, t))) for b in blocks for t in zip(b["epoch"], b["lo"], b["hi"])]
    found = [(r["epoch"], k) for r in rows for k in range(r["lo"], r["hi"])]
    assert found == [(e, k) for e, first, end in spans for k in range(first, end)]  # each once, in order
    assert all(0 < r["hi"] - r["lo"] <= CHUNK for r in rows)
    assert chunk_blocks([(1, 5, 5)]) == []


def test_an_exact_workers_samples_are_every_world_size_th_from_its_rank_across_epochs():
    domains = small_domains()
    rank, world_size = 1, 2  # 5 samples a worker an epoch; this one had done 7 from epoch 2 (a resized group)
    spans = worker_spans(domains, 2, 7, world_size, last_epoch=4)
    found = [(int(e), rank + world_size * k) for b in chunk_blocks(spans)
             for e, lo, hi in zip(b["epoch"], b["lo"], b["hi"]) for k in range(lo, hi)]
    assert found == [(3, i) for i in (5, 7, 9)] + [(4, i) for i in (1, 3, 5, 7, 9)]


def test_a_workers_samples_are_cut_into_batches_by_count_at_epoch_ends():
    blocks = [{"A": np.zeros((n, 3, 2, 2), np.uint8), "B": np.zeros((n, 3, 2, 2), np.uint8)} for n in (4, 3, 6)]
    cfg = from_dict({"batch_size": 2})
    cut = [(epoch, batch["A"].shape[0]) for epoch, batch in cut_batches(iter(blocks), cfg, epoch=2, start=2,
                                                                         per_epoch=5)]
    # 3 samples left of epoch 2, then 5 per epoch; batches of 2 never span an epoch end.
    assert cut == [(2, 2), (2, 1), (3, 2), (3, 2), (3, 1), (4, 2), (4, 2), (4, 1)]
    # A resized group may start at an epoch's end: its samples are the next epoch's.
    assert [e for e, _ in cut_batches(iter(blocks[:1]), cfg, epoch=2, start=5, per_epoch=5)] == [3, 3]


def test_the_object_store_listing_skips_and_caps_as_the_local_listing(tmp_path):
    write_mixed_pair(tmp_path)
    listed = [Path(p).name for p in list_files(tmp_path / "trainA", max_size=3)]
    assert listed == ["A0.JPG", "a1.png", "a2.Png"]
    assert [Path(p).name for p in list_objects(str(tmp_path / "trainA"), Storage.from_options(), max_size=3)] == listed


@pytest.mark.slow
def test_a_BtoA_ray_stream_serves_the_same_pairs_as_the_local_dataset(ray_session, tmp_path):
    """The batches a Ray Train worker trains on (its StreamBatches, epoch after epoch on one stream, as the
    trainer asks for them) are the local dataset's samples, in order."""
    from cyclegan.distributed.worker import StreamBatches
    write_images(tmp_path / "trainA", [f"a{i}.png" for i in range(2)], green=90)
    write_images(tmp_path / "trainB", [f"b{i}.png" for i in range(6)], green=200)  # every image its own colour
    # Two epochs in the run: the stream ends where the last one tested does.
    cfg = from_dict(dict(dataroot=str(tmp_path), load_size=28, crop_size=24, direction="BtoA", seed=1,
                         data_ingest="exact", n_epochs=1, n_epochs_decay=1))
    local = UnalignedDataset(cfg)
    store = Storage.from_options()
    data = StreamBatches(cfg, scan_domains(cfg, store), store, run_uri=str(tmp_path / "run"))
    assert data.epoch_length() == 6
    for epoch in (1, 2):
        local.set_epoch(epoch)
        streamed = list(data.batches(epoch, 0))
        assert len(streamed) == 6
        for i, batch in enumerate(streamed):
            assert torch.equal(batch["A"][0], local[i]["A"]) and torch.equal(batch["B"][0], local[i]["B"]), i
