"""``cyclegan translate``: a trained generator over any number of images, from a folder or an s3://, gs://
prefix to another, with the relative names kept; the same preprocessing and output pixels as
``cyclegan test --model test`` (its ``<stem>_fake.png``).

The generator comes from a run folder or a sweep report's ``best/`` folder, or a weights file (see
``core/inference.py``). In this process with ``--num_workers 0``; on Ray Data otherwise
(``distributed/translate.py``). Either way undecodable inputs are skipped, counted and listed in
``<output>/_translate_report.json``, and outputs that already exist are not made again, so running the
command again after a killed or preempted job finishes the rest.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from ..core.config import TEST_DEFAULTS, Config, ConfigError
from ..core.data import BadImage, DataError
from ..core.inference import (
    GeneratorSpec,
    encode_output,
    generator_spec,
    image_paths,
    input_base,
    load_input,
    output_location,
    output_name,
    translate_batch,
    unsafe_name,
)
from ..core.storage import Storage
from . import COMMANDS
from .options import add_arguments, add_generator_argument, test_time_config

log = logging.getLogger("cyclegan")

REPORT_FILE = "_translate_report.json"
PARTS_WAIT_S = 30.0  # for a killed job's writers still being stopped at the end of this one


def check_apart(input_uri: str, output_uri: str, store: Storage) -> None:
    """Neither folder inside the other: outputs below the input would be taken for inputs the next time,
    and inputs below the output for outputs already made (and an output could land on one)."""
    fs, base = store.resolve(input_uri.rstrip("/"))
    out_fs, out_base = store.resolve(output_uri.rstrip("/"))
    if type(out_fs) is not type(fs):
        return
    if (out_base + "/").startswith(base.rstrip("/") + "/"):
        raise ConfigError(f"output: {output_uri!r} is inside the input {input_uri!r}; its outputs would be "
                          f"taken for inputs the next time")
    if (base + "/").startswith(out_base.rstrip("/") + "/"):
        raise ConfigError(f"input: {input_uri!r} is inside the output {output_uri!r}; its images would be "
                          f"taken for outputs, and an output could be written over one")


def listing(input_uri: str, output_uri: str, cfg: Config, store: Storage
            ) -> tuple[pa.Table, int, list[dict], OutputNames]:
    """The images under ``input_uri`` still to translate, sorted: a table of ``index``, the image's place
    in the sorted listing (its preprocessing draws from it, as ``cyclegan test``'s does), and ``relative``,
    its name below the input; how many already have their output; the inputs refused, each with its
    reason: names that would put an output outside --output, and a second input whose output would be
    another's (a.jpg and a.png both make a.png: the first in the listing keeps it); and the names (below
    --output) of every file this run may write. Arrow columns hold a few tens of bytes an image (a list
    of dicts, 400), so the driver stays small with millions of frames."""
    check_apart(input_uri, output_uri, store)
    base = input_base(input_uri, store)
    out_base = store.resolve(output_uri.rstrip("/"))[1]
    cut = len(base) + 1
    relatives = [path[cut:] for path in image_paths(input_uri, store)]
    if not relatives:
        raise DataError(f"{input_uri}: no images under this folder or prefix")
    done = set()
    if store.exists(output_uri):
        done = {i.path[len(out_base.rstrip("/")) + 1:] for i in store.list_files(output_uri.rstrip("/"))}
    refused, owner, usable = [], {}, []
    for index, relative in enumerate(relatives):
        reason = unsafe_name(relative)
        name = output_name(relative, cfg)
        if reason is None and name in owner:
            reason = f"its output {name} is already the output of {owner[name]}"
        if reason:
            refused.append({"input": relative, "reason": reason})
            continue
        owner[name] = relative
        usable.append(index)
    left = [index for index in usable if output_name(relatives[index], cfg) not in done]
    table = pa.table({"index": pa.array(left, pa.int64()),
                      "relative": pa.array([relatives[i] for i in left], pa.string())})
    return table, len(usable) - len(left), refused, OutputNames([*owner, REPORT_FILE])


class OutputNames:
    """The names (below --output) of every file this run writes, for ``Storage.remove_stale_parts``, which
    asks about the few ``.part`` files it finds: one Arrow column (21 MB for a million names, where a set
    of Python strings would hold 100 MB through the whole run), searched in C, a few ms a question."""

    def __init__(self, names: list[str]):
        self.names = pa.array(names, pa.string())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and pc.index(self.names, name).as_py() != -1


def remove_stale_outputs(output_uri: str, names: OutputNames, store: Storage, wait_s: float = 0.0) -> None:
    """This run's unfinished outputs a killed job left (``<name>.<pid>.part``, its writer gone): made again.
    Only the files this run writes: any other ``*.part`` below --output is the user's."""
    if store.remove_stale_parts(output_uri, names, wait_s=wait_s):
        log.info("removed unfinished outputs of a killed job in %s", output_uri)


def write_report(output_uri: str, store: Storage, report: dict) -> dict:
    store.write_text(f"{output_uri.rstrip('/')}/{REPORT_FILE}", json.dumps(report, indent=2))
    return report


def translate(cfg: Config, source: str, input_uri: str, output_uri: str, given: set[str] = frozenset(),
              store: Optional[Storage] = None, progress_bar: bool = True, runner=None) -> dict:
    """``cyclegan translate``: returns (and writes beside the outputs) the report. ``runner``: what does
    the work (``translate_here`` by default; the Ray layer passes its own)."""
    if cfg.jpeg_quality > 100:
        raise ConfigError(f"jpeg_quality: {cfg.jpeg_quality} is above 100")
    store = store or Storage.from_options(cfg.storage_options)
    spec = generator_spec(source, cfg, store, given)
    todo, already, refused, names = listing(input_uri, output_uri, spec.cfg, store)
    remove_stale_outputs(output_uri, names, store)
    began = time.perf_counter()
    counts = (runner or translate_here)(spec, todo, input_uri, output_uri, store, progress_bar)
    seconds = time.perf_counter() - began
    # A killed job's worker still alive at the listing (Ray stops them a moment after their driver) may
    # have left an unfinished output since; its output is made by now.
    remove_stale_outputs(output_uri, names, store, wait_s=PARTS_WAIT_S)
    bad = refused + counts["bad"]
    report = {"generator": spec.weights, "input": input_uri, "output": output_uri,
              "already_done": already, "translated": counts["translated"], "skipped": len(bad),
              "bad_inputs": bad, "seconds": seconds,
              "images_per_sec": counts["translated"] / seconds if seconds > 0 else 0.0}
    if report["bad_inputs"]:
        log.warning("skipped %d input(s) (undecodable, or refused names), listed in %s/%s", report["skipped"],
                    output_uri, REPORT_FILE)
    return write_report(output_uri, store, report)


def translate_here(spec: GeneratorSpec, todo: pa.Table, input_uri: str, output_uri: str, store: Storage,
                   progress_bar: bool = True) -> dict:
    """In this process: read, translate in batches of --batch_size, write."""
    from ..core.parallel import resolve_device
    device = resolve_device(spec.cfg.device)
    net = spec.build(store, device)
    bad, translated, out_root = [], 0, output_uri.rstrip("/")
    base = input_base(input_uri, store)
    batch_size = max(1, spec.cfg.batch_size)
    with tqdm(total=todo.num_rows, unit="img", disable=not progress_bar) as bar:
        for start in range(0, todo.num_rows, batch_size):
            rows, images = [], []
            chunk = todo.slice(start, batch_size).to_pylist()
            for row in chunk:
                path = f"{base}/{row['relative']}"
                try:
                    images.append(load_input(store.read_bytes(input_uri, listed=path), path, row["index"], spec))
                    rows.append(row)
                except BadImage as e:
                    bad.append({"input": row["relative"], "reason": str(e)})
            for row, out in zip(rows, translate_batch(net, images, device)):
                store.write_bytes(output_location(out_root, row["relative"], spec.cfg), encode_output(out, spec.cfg))
                translated += 1
            bar.update(len(chunk))
    return {"translated": translated, "bad": bad}


def add_parser(sub) -> None:
    p = sub.add_parser("translate", help=COMMANDS["translate"], description=__doc__)
    add_arguments(p, "translate", TEST_DEFAULTS)
    add_generator_argument(p, "G_A, or G_B with --direction BtoA")
    p.add_argument("--input", required=True, help="folder or s3://, gs:// prefix of images")
    p.add_argument("--output", required=True, help="folder or prefix for the outputs (same relative names)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg, given = test_time_config(args)
    runner = None
    if cfg.max_workers > 0:  # Ray Data: tasks read and write, an actor pool translates
        from ..distributed.translate import translate_on_ray as runner
    report = translate(cfg, args.generator, args.input, args.output, given=given, runner=runner)
    print(f"translated {report['translated']} image(s) into {args.output} ({report['already_done']} already there, "
          f"{report['skipped']} undecodable skipped), {report['images_per_sec']:.1f} images/s")
    print(json.dumps(report), flush=True)
    return 0
