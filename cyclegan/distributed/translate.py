"""``cyclegan translate`` on Ray Data: tasks read and decode the inputs, an actor pool runs the generator
(one actor per GPU with --use_gpu, --batch_size images at a time), tasks encode and write the outputs.
Streaming: blocks flow through as they are ready, so memory stays flat however many images there are.
Each actor reads the weights itself from where they are stored; nothing large goes through the driver."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from ..core.data import BadImage
from ..core.inference import GeneratorSpec, encode_output, input_base, load_input, output_location, translate_batch
from ..core.storage import Storage
from .runtime import check_cluster, check_no_secrets, init_ray, quiet_data
from .streams import LOAD_TASK_CPUS

CHUNK = 16  # inputs read by one task
MAX_BLOCKS = 4096  # of the listing: a million images go 245 to a block


def _read(batch: dict, spec: GeneratorSpec, input_uri: str, base: str, store: Storage) -> dict:
    """Inputs decoded and preprocessed; as raw bytes and a shape, so that any mix of sizes and the rows of
    undecodable inputs (kept, with their reason, for the report) travel as one table."""
    images, shapes, reasons = [], [], []
    for relative, index in zip(batch["relative"], batch["index"]):
        path = f"{base}/{relative}"
        try:
            image = load_input(store.read_bytes(input_uri, listed=path), path, int(index), spec)
            images.append(image.tobytes())
            shapes.append(",".join(map(str, image.shape)))
            reasons.append("")
        except BadImage as e:
            images.append(b"")
            shapes.append("")
            reasons.append(str(e))
    return {"relative": batch["relative"], "image": np.array(images, dtype=object),
            "shape": np.array(shapes, dtype=object), "reason": np.array(reasons, dtype=object)}


class Translator:
    """One generator on one device (a GPU when the actor was given one)."""

    def __init__(self, spec: GeneratorSpec, store: Storage):
        import torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cpu":  # the CPUs the actor was given (Ray's default here is one thread)
            torch.set_num_threads(max(1, round(spec.cfg.cpus_per_worker)))
        self.net = spec.build(store, self.device)
        self.spec = spec

    def __call__(self, batch: dict) -> dict:
        good = [i for i, reason in enumerate(batch["reason"]) if not reason]
        images = [np.frombuffer(batch["image"][i], np.uint8).reshape([int(n) for n in batch["shape"][i].split(",")])
                  for i in good]
        outputs = translate_batch(self.net, images, self.device)
        encoded = np.empty(len(batch["reason"]), dtype=object)
        encoded[:] = [b""] * len(encoded)
        for i, out in zip(good, outputs):
            encoded[i] = encode_output(out, self.spec.cfg)
        return {"relative": batch["relative"], "encoded": encoded, "reason": batch["reason"]}


def _write(batch: dict, spec: GeneratorSpec, output_uri: str, store: Storage) -> dict:
    root = output_uri.rstrip("/")
    for relative, data, reason in zip(batch["relative"], batch["encoded"], batch["reason"]):
        if not reason:
            store.write_bytes(output_location(root, relative, spec.cfg), data)
    return {"relative": batch["relative"], "reason": batch["reason"]}


def translate_on_ray(spec: GeneratorSpec, todo: pa.Table, input_uri: str, output_uri: str, store: Storage,
                     progress_bar: bool = True) -> dict:
    import ray
    import ray.data
    cfg = spec.cfg
    check_no_secrets(store)
    init_ray(cfg.address)
    # Tasks and actors on other nodes read the inputs and weights and write the outputs themselves.
    check_cluster(cfg, store, {"input": input_uri, "output": output_uri, "generator": spec.weights})
    quiet_data()
    if not todo.num_rows:
        return {"translated": 0, "bad": []}
    gpus = 1 if cfg.use_gpu else 0
    actors = cfg.concurrency or (max(1, int(ray.cluster_resources().get("GPU", 0))) if gpus else cfg.max_workers)
    # Blocks of the listing: CHUNK images each, or more where there would be over MAX_BLOCKS of them.
    rows_per_block = max(CHUNK, -(-todo.num_rows // MAX_BLOCKS))
    blocks = [todo.slice(start, rows_per_block) for start in range(0, todo.num_rows, rows_per_block)]
    ds = (ray.data.from_arrow(blocks)
          .map_batches(_read, batch_size=CHUNK, num_cpus=LOAD_TASK_CPUS,
                       fn_kwargs={"spec": spec, "input_uri": input_uri, "base": input_base(input_uri, store),
                                  "store": store})
          .map_batches(Translator, batch_size=max(1, cfg.batch_size), concurrency=actors, num_gpus=gpus,
                       num_cpus=0 if gpus else cfg.cpus_per_worker,
                       fn_constructor_kwargs={"spec": spec, "store": store})
          .map_batches(_write, batch_size=CHUNK, num_cpus=LOAD_TASK_CPUS,
                       fn_kwargs={"spec": spec, "output_uri": output_uri, "store": store}))
    translated, bad = 0, []
    with tqdm(total=todo.num_rows, unit="img", disable=not progress_bar) as bar:
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for relative, reason in zip(block["relative"], block["reason"]):
                if reason:
                    bad.append({"input": str(relative), "reason": str(reason)})
                else:
                    translated += 1
            bar.update(len(block["relative"]))
    return {"translated": translated, "bad": sorted(bad, key=lambda b: b["input"])}
