"""Checkpoints: full training state for exact resumption, and reference-format weight files.

Full state (one file per save, newest ``keep`` kept) holds the four networks, both optimizers,
the schedule, both image pools, every RNG state, the data position and the config. Every file
is written to a temporary name and renamed, so a crash never leaves a half-written checkpoint
under a real name. Everything is loaded with ``torch.load(weights_only=True)``: nothing from
a user's file is unpickled.
"""
from __future__ import annotations

import io
import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import numpy as np
import torch
from torch import nn

from .errors import UserError

FORMAT = "cyclegan/full-state"
VERSION = 1
STATE_DIR = "state"
_STATE_RE = re.compile(r"^state_iter(\d+)\.pt$")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; once, at import (threads write files later)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file here (mkstemp gives 0600)
TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # .<name>.<random>.tmp, as atomic_write names them


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """``write(file)`` into a temporary file in the same folder, fsync, then rename over ``path``: a crash
    leaves the old file or the new one, never half of one (and a stale temporary, which the next run's
    start removes). The file gets the mode the umask gives new files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save, atomically (``atomic_write``)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def remove_stale_temporaries(run_dir: str | os.PathLike) -> int:
    """The temporaries a killed save left in a run's folder and its state folder; how many went. Called
    at a run's start, before it writes anything."""
    removed = 0
    for folder in (Path(run_dir), Path(run_dir) / STATE_DIR):
        if folder.is_dir():
            for stale in [p for p in folder.iterdir() if p.is_file() and TEMPORARY.match(p.name)]:
                stale.unlink(missing_ok=True)
                removed += 1
    return removed


def safe_load(source: str | os.PathLike | bytes, name: Optional[str] = None) -> Any:
    """A checkpoint file (a path, or its bytes with ``name`` for messages), weights only."""
    name = name or str(source)
    try:
        return torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                          weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated zip, bad pickle, forbidden global: all mean "unusable"
        raise CheckpointError(f"{name}: unreadable checkpoint ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------- RNG states
def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_generator_state(gen: torch.Generator, state: torch.Tensor) -> bool:
    """Put a generator's saved state back, also when it was saved on another kind of device: a CPU
    generator's state (Mersenne Twister, 5056 bytes) and a CUDA one's (Philox, 16 bytes) do not fit each
    other, so a checkpoint written on a CPU and resumed on a GPU (or back) seeds the generator from the
    saved state instead: the same checkpoint always resumes the same way, but not bit-identical to a run
    that never moved (nothing across devices is). Returns whether the state went back as saved."""
    if state.numel() == gen.get_state().numel():
        gen.set_state(state)
        return True
    import hashlib
    digest = hashlib.sha256(state.cpu().numpy().tobytes()).digest()
    gen.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    warnings.warn(f"a random stream saved on another kind of device ({state.numel()} bytes, this {gen.device.type} "
                  f"generator's take {gen.get_state().numel()}) was reseeded from it: the run goes on, not "
                  f"bit-identical to one that stayed on one device", stacklevel=2)
    return False


# ---------------------------------------------------------------- full state
def state_files(run_dir: str | os.PathLike) -> list[Path]:
    """Full-state checkpoints of a run, newest first."""
    folder = Path(run_dir) / STATE_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STATE_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def state_payload(state: dict) -> dict:
    """A full state as written: marked with this format and its version."""
    return {"format": FORMAT, "version": VERSION, **state}


def save_state(run_dir: str | os.PathLike, state: dict, keep: int) -> Path:
    state = state_payload(state)
    path = atomic_save(state, Path(run_dir) / STATE_DIR / f"state_iter{state['total_iters']:010d}.pt")
    for old in state_files(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_state(source: str | os.PathLike | bytes | None, name: Optional[str] = None) -> dict:
    """A full state from a path, or from its bytes (``name`` for messages)."""
    name = name or str(source)
    if source is None:
        raise CheckpointError(f"{name}: missing")
    state = safe_load(source, name)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not a cyclegan full-state checkpoint")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{name}: written by a newer cyclegan (format version {state['version']})")
    return state


def load_latest_state(run_dir: str | os.PathLike) -> Optional[tuple[Path, dict]]:
    """The newest loadable full state; unreadable newer ones are reported and passed over."""
    for path in state_files(run_dir):
        try:
            return path, load_state(path)
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
    return None


# ---------------------------------------------------------------- reference-format weights
def clean_state_dict(state_dict: dict[str, torch.Tensor], net: Optional[nn.Module] = None) -> dict:
    """Strip DDP/compile prefixes; drop InstanceNorm running stats that old reference files carry."""
    cleaned = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        cleaned[key] = value
    if net is not None:
        modules = dict(net.named_modules())
        for key in list(cleaned):
            owner, _, leaf = key.rpartition(".")
            if leaf in ("running_mean", "running_var", "num_batches_tracked") and \
                    isinstance(modules.get(owner), nn.InstanceNorm2d) and not modules[owner].track_running_stats:
                del cleaned[key]
    return cleaned


def unwrap(net: nn.Module) -> nn.Module:
    while hasattr(net, "module") or hasattr(net, "_orig_mod"):
        net = getattr(net, "module", None) or getattr(net, "_orig_mod")
    return net


def weights_label(epoch: str, load_iter: int = 0) -> str:
    """The reference's name for a set of weights: ``iter_<n>`` with --load_iter, else --epoch."""
    return f"iter_{load_iter}" if load_iter > 0 else epoch


def save_reference_weights(run_dir: str | os.PathLike, nets: dict[str, nn.Module], label: str) -> list[Path]:
    """``<run_dir>/<label>_net_<name>.pth``: plain CPU state_dicts, as the reference writes them."""
    return write_reference_weights(run_dir, reference_weights(nets), (label,))


def reference_weights(nets: dict[str, nn.Module], copy: bool = False) -> dict[str, dict]:
    """Each network's state_dict as the reference saves it (CPU, plain keys); ``copy``: tensors of their
    own, so that they can be written while training goes on changing the networks."""
    return {name: {k: v.detach().to("cpu", copy=copy) for k, v in clean_state_dict(unwrap(net).state_dict()).items()}
            for name, net in nets.items()}


def write_reference_weights(run_dir: str | os.PathLike, weights: dict[str, dict], labels: tuple[str, ...]) -> list[Path]:
    return [atomic_save(sd, Path(run_dir) / f"{label}_net_{name}.pth") for label in labels for name, sd in weights.items()]


def load_reference_weights(net: nn.Module, path: str | os.PathLike | bytes, name: Optional[str] = None) -> None:
    """Weights in the reference format into ``net``: from a file, or its bytes (``name`` for messages)."""
    sd = safe_load(path, name)
    path = name or path
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: not a state_dict of tensors")
    target = unwrap(net)
    sd = clean_state_dict(sd, target)
    expected = target.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(sd) & set(expected) if sd[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(part for part in (
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else "",
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}" if unexpected else "",
            f"shape mismatch {wrong[:3]}" if wrong else "") if part)
        raise CheckpointError(f"{path}: does not fit this network ({details}); check --netG/--netD/--ngf/--ndf/"
                              f"--norm/--input_nc/--output_nc")
    target.load_state_dict(sd)


# ---------------------------------------------------------------- one writer per run
LOCK_FILE = ".lock"


class RunInUse(UserError):
    """Another process writes this run; the message names the run and the holder."""


class RunLock:
    """One writer per run folder: an exclusive lock (flock) on ``<run>/.lock``, which names its holder.
    The kernel lets go of it when the holder ends, however it ends, so a lock left by a killed run is
    taken over by the next start (its note only says who held it). A folder on a filesystem several
    machines mount may not honour flock; Ray runs and sweeps, written from several machines, are held
    by their driver's lease on their storage instead (core/lease.py)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self.file = None

    def acquire(self) -> None:
        import fcntl
        import json
        import socket
        import time
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = os.fdopen(self._open(), "r+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read() or "{}")
            except ValueError:
                holder = {}
            f.close()
            raise RunInUse(f"name: the run {self.path.parent} is being written by another process (pid "
                           f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}); "
                           f"wait for it to end, or give another --name or --checkpoints_dir") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        f.flush()
        self.file = f

    def _open(self) -> int:
        """The lock file, never through a link: a ``.lock`` planted as one would have its target truncated."""
        import errno
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(f"name: {self.path} is a symbolic link, not the run's lock file; remove it "
                                f"(nothing was written through it)") from None
            raise

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing lets go of the lock
            self.file = None
