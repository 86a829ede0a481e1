"""A trial's weights out of a sweep: its checkpoint loaded as a model, and a pair's best written in the
reference format (``latest_net_G_A.pth`` ... with ``train_opt.yaml``), loadable by ``cyclegan test``,
``translate`` and ``export``, with ``trial.json`` saying which trial, checkpoint and score they are."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import torch
import yaml

from ...core import checkpoint as ckpt
from ...core.config import Config, from_dict
from ...core.model import CycleGAN
from ...core.storage import Storage
from ...distributed.sweep_results import TrialRecord


def load_trial(store: Storage, sweep_uri: str, state_path: str) -> tuple[Config, CycleGAN]:
    """The options and networks of a trial's checkpoint (``state_path`` as the filesystem listed it), on the CPU."""
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "state.pt"
        local.write_bytes(store.read_bytes(sweep_uri, listed=state_path))
        state = ckpt.load_state(local)  # weights_only
    saved = {k: v for k, v in state["config"].items() if k != "storage_options"}
    cfg = from_dict({**saved, "device": "cpu", "num_workers": "0", "address": None, "resume": None})
    model = CycleGAN(cfg, device=torch.device("cpu"))  # with the discriminators, which are exported too
    for name, net in model.networks().items():
        net.load_state_dict(state["model"]["nets"][name])
    return cfg, model


def export_best(folder: Path, record: TrialRecord, cfg: Config, model: CycleGAN, dataroot: Optional[str]) -> None:
    """The pair's best trial into ``folder``: its four networks in the reference format, its options with the
    pair's own ``dataroot`` (none for a built-in pair: ``cyclegan test`` writes it again), and its record."""
    folder.mkdir(parents=True, exist_ok=True)
    ckpt.save_reference_weights(folder, model.networks(), "latest")
    (folder / "train_opt.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "dataroot": dataroot}, sort_keys=False))
    (folder / "trial.json").write_text(json.dumps(
        {"trial": record.trial_id, "metric": record.metric, "final": record.final, "best": record.best,
         "params": record.params, "checkpoint": record.checkpoint, "checkpoint_score": record.checkpoint_score,
         "checkpoint_epochs": record.checkpoint_epochs}, indent=2))
