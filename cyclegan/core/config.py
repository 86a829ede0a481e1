"""The one schema for every option: names, types, defaults and allowed values.

Names and defaults follow the reference ``train.py``/``test.py`` so existing commands work as
they are. A YAML file uses the same keys; command-line flags override the file. Everything is
validated at load, and errors name the bad key and value.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import UserError

# Allowed values (the schema's; networks.py builds each of these).
GENERATORS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")
DISCRIMINATORS = ("basic", "n_layers", "pixel")
NORMS = ("instance", "batch", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
GAN_MODES = ("lsgan", "vanilla", "wgangp")
LR_POLICIES = ("linear", "step", "plateau", "cosine")
AMP_MODES = ("none", "bf16", "fp16")
COMPILE_MODES = ("none", "networks", "step")
BUILTIN_PAIRS = ("zebra", "fruit", "seasons")  # kept in step with synth.PAIRS (checked in tests)


class ConfigError(UserError, ValueError):
    """A bad option: the message names the key and the value."""


MAX_IMAGE_SIZE = 8192  # pixels a side: a 8192x8192 RGB float image is already 805 MB

# Which commands take an option (as a flag): a command's parser and --help list only its own.
TRAINING = ("train", "bench")  # bench times training iterations (and Ray runs) as train describes them
RUN = TRAINING + ("test", "eval")  # a run under <checkpoints_dir>/<name> and its dataset
ANY = RUN + ("translate", "export")  # what shapes a generator and preprocesses its images
RAY = TRAINING + ("translate",)  # what places work on a Ray cluster
STORAGE = RAY + ("export",)  # object storage settings
TEST_TIME = ("test", "eval", "translate", "export")  # how a trained generator runs


def opt(default, help: str, choices=None, minimum=None, commands: tuple[str, ...] = TRAINING, maximum=None,
        process: bool = False):
    """``process``: the option is of the process that runs the command (where it connects, its local folders,
    how it reaches the store), not of a run: a stored run's options never set it (core/stored.py)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
                                            "commands": commands, "process": process})


@dataclass
class Config:
    # --- experiment and data (reference names) ---
    dataroot: Optional[str] = opt(None, "dataset folder with trainA/trainB/testA/testB; empty: a built-in pair",
                                  commands=RUN)
    name: str = opt("experiment_name", "run name: checkpoints go to <checkpoints_dir>/<name>", commands=RUN)
    checkpoints_dir: str = opt("./checkpoints", "where runs are stored", commands=RUN, process=True)
    phase: str = opt("train", "train, test, val ...: which <phase>A/<phase>B folders to read",
                     commands=("train", "bench", "test", "eval", "export"))
    direction: str = opt("AtoB", "AtoB or BtoA", choices=("AtoB", "BtoA"), commands=ANY)
    serial_batches: bool = opt(False, "take images in order; otherwise B is drawn at random", commands=RUN)
    num_threads: int = opt(4, "data-loading worker processes", minimum=0, commands=RUN)
    batch_size: int = opt(1, "images per iteration (per worker)", minimum=1, maximum=4096, commands=ANY)
    load_size: int = opt(286, "scale images to this size", minimum=1, maximum=MAX_IMAGE_SIZE, commands=ANY)
    crop_size: int = opt(256, "then crop to this size", minimum=1, maximum=MAX_IMAGE_SIZE, commands=ANY)
    max_dataset_size: float = opt(math.inf, "use at most this many images per domain", minimum=1, commands=RUN)
    preprocess: str = opt("resize_and_crop", "image scaling and cropping", choices=PREPROCESS_MODES, commands=ANY)
    no_flip: bool = opt(False, "do not flip images horizontally for augmentation", commands=RUN)
    input_nc: int = opt(3, "channels of domain A images (1: grayscale)", choices=(1, 3), commands=ANY)
    output_nc: int = opt(3, "channels of domain B images (1: grayscale)", choices=(1, 3), commands=ANY)
    # --- networks ---
    netG: str = opt("resnet_9blocks", "generator architecture", choices=GENERATORS, commands=ANY)
    netD: str = opt("basic", "discriminator architecture", choices=DISCRIMINATORS, commands=RUN)
    n_layers_D: int = opt(3, "discriminator depth when netD is n_layers", minimum=1, maximum=8, commands=RUN)
    ngf: int = opt(64, "generator filters in the last conv layer", minimum=1, maximum=1024, commands=ANY)
    ndf: int = opt(64, "discriminator filters in the first conv layer", minimum=1, maximum=1024, commands=RUN)
    norm: str = opt("instance", "normalization layers", choices=NORMS, commands=ANY)
    init_type: str = opt("normal", "weight initialisation", choices=INIT_TYPES, commands=ANY)
    init_gain: float = opt(0.02, "scale of normal/xavier/orthogonal initialisation", minimum=0.0, commands=ANY)
    no_dropout: bool = opt(True, "no dropout in the generator (CycleGAN default; --dropout turns it on)", commands=ANY)
    # --- objective ---
    gan_mode: str = opt("lsgan", "adversarial loss", choices=GAN_MODES, commands=TRAINING)
    lambda_A: float = opt(10.0, "weight of cycle loss A -> B -> A", minimum=0.0, commands=TRAINING)
    lambda_B: float = opt(10.0, "weight of cycle loss B -> A -> B", minimum=0.0, commands=TRAINING)
    lambda_identity: float = opt(0.5, "identity loss weight, relative to lambda_A/lambda_B", minimum=0.0,
                                 commands=TRAINING)
    lambda_gp: float = opt(10.0, "gradient-penalty weight for gan_mode wgangp", minimum=0.0, commands=TRAINING)
    pool_size: int = opt(50, "generated images kept for the discriminators (0: no pool)", minimum=0, commands=TRAINING)
    # --- optimisation ---
    lr: float = opt(0.0002, "Adam learning rate", minimum=0.0, commands=TRAINING)
    beta1: float = opt(0.5, "Adam beta1", minimum=0.0, commands=TRAINING)
    lr_policy: str = opt("linear", "learning-rate schedule", choices=LR_POLICIES, commands=TRAINING)
    n_epochs: int = opt(100, "epochs at the initial learning rate", minimum=0, commands=TRAINING)
    n_epochs_decay: int = opt(100, "epochs of decay to zero", minimum=0, commands=TRAINING)
    lr_decay_iters: int = opt(50, "epochs between x0.1 steps for lr_policy step", minimum=1, commands=TRAINING)
    epoch_count: int = opt(1, "number of the first epoch", minimum=1, commands=TRAINING)
    seed: int = opt(0, "seeds weights, data order, augmentation and the image pools", minimum=0,
                    maximum=2**32 - 1, commands=ANY)
    # --- saving and resuming ---
    save_latest_freq: int = opt(5000, "save the latest checkpoint every this many training images", minimum=1,
                                commands=TRAINING)
    save_epoch_freq: int = opt(5, "save a checkpoint every this many epochs", minimum=1, commands=TRAINING)
    save_latest_secs: float = opt(0.0, "also save the latest checkpoint once this many seconds have passed "
                                       "since the last save (0: off); for spot clusters, where what is lost "
                                       "is time, not images", minimum=0.0, commands=TRAINING)
    notice_check_freq: int = opt(8, "Ray workers first agree after this many training images (one small "
                                    "all-reduce) on a spot notice or a due --save_latest_secs save, so all "
                                    "save at the same step", minimum=1, commands=TRAINING)
    notice_check_secs: float = opt(5.0, "after that, they agree about this often: the next check's image count "
                                        "comes from the step time they agreed on, so no step waits for the "
                                        "host; a notice is acted on about this late", minimum=0.0,
                                   maximum=60.0, commands=TRAINING)
    save_by_iter: bool = opt(False, "the periodic save writes reference weights iter_<n> instead of latest",
                             commands=TRAINING)
    continue_train: bool = opt(False, "continue from the latest checkpoint of this run", commands=TRAINING,
                               process=True)
    epoch: str = opt("latest", "which checkpoint to load: latest, an epoch number, or iter_<n>", commands=ANY)
    load_iter: int = opt(0, "if > 0, load the weights of this iteration (iter_<n>); test results go to "
                            "<phase>_<epoch>_iter<n>", minimum=0, commands=ANY)
    keep_checkpoints: int = opt(3, "full-state checkpoints kept (older ones are deleted)", minimum=1, commands=TRAINING)
    print_freq: int = opt(100, "log losses every this many training images", minimum=1, commands=TRAINING)
    # --- this implementation ---
    device: str = opt("auto", "auto (CUDA when present), cpu, cuda, cuda:N", commands=ANY)
    amp: str = opt("none", "mixed precision: bf16 (CUDA or CPU) or fp16 (CUDA only, with loss scaling); "
                           "default none (fp32): bf16 measured 1.4-2x faster on CPU but changes the numbers",
                   choices=AMP_MODES, commands=TRAINING)
    channels_last: bool = opt(False, "channels-last memory format (off: measured slower on CPU)", commands=TRAINING)
    compile: str = opt("none", "torch.compile: networks (each network) or step (the forwards and losses of "
                               "each optimizer as one graph); default none: measured no faster than eager on CPU, "
                               "with about a minute of compilation first", choices=COMPILE_MODES, commands=TRAINING)
    fused_adam: bool = opt(False, "fused Adam kernels (CPU and CUDA); measured 8% faster on CPU, but off "
                                 "until the golden loss curve is regenerated (it changes rounding)", commands=TRAINING)
    cudnn_benchmark: bool = opt(False, "let cuDNN pick the fastest convolution algorithms (CUDA only; "
                                       "not measured on GPU yet)", commands=TRAINING)
    cuda_graphs: bool = opt(False, "capture the step as CUDA graphs (CUDA only; not implemented yet: "
                                   "refused on every device)", commands=TRAINING)
    tensorboard: bool = opt(True, "write TensorBoard event files under the run folder", commands=TRAINING)
    image_log_freq: int = opt(1000, "log image grids every this many training images", minimum=1, commands=TRAINING)
    eval_at_end: bool = opt(True, "score the final generators on the test split when it has ideal translations",
                            commands=TRAINING)
    builtin: str = opt("seasons", "built-in pair used when dataroot is empty", choices=BUILTIN_PAIRS, commands=RUN)
    builtin_size: int = opt(64, "image size of the built-in pair", minimum=8, maximum=1024, commands=RUN)
    builtin_count: int = opt(200, "training images per domain of the built-in pair", minimum=1, commands=RUN)
    # --- cyclegan translate ---
    translate_format: str = opt("png", "cyclegan translate: output images as png or jpeg", choices=("png", "jpeg"),
                                commands=("translate",))
    jpeg_quality: int = opt(95, "cyclegan translate: JPEG quality (1-95)", minimum=1, commands=("translate",))
    concurrency: int = opt(0, "cyclegan translate on Ray: generator actors (0: one per GPU with --use_gpu, "
                              "else --num_workers)", minimum=0, commands=("translate",))
    # --- cyclegan export ---
    export_format: str = opt("both", "cyclegan export: onnx, torchscript or both", choices=("onnx", "torchscript", "both"),
                             commands=("export",))
    export_tolerance: float = opt(1e-4, "cyclegan export: the largest absolute difference from PyTorch's output "
                                        "(in [-1, 1]; a uint8 level is 0.0078) that an exported file may show "
                                        "in its check", minimum=0.0, commands=("export",))
    # --- distributed (Ray) ---
    num_workers: str = opt("0", "0: train in this process; N: Ray Train with N workers; MIN-MAX: elastic, "
                                "fewer workers while capacity is short (s3://, gs://, --address, --resume imply 1)",
                                commands=RAY)
    use_gpu: bool = opt(False, "request one GPU per Ray worker (an autoscaler then starts GPU nodes); NCCL "
                               "between them. Off: CPU workers, gloo", commands=RAY)
    grad_compression: str = opt("none", "Ray workers all-reduce the gradients as bf16 (half the bytes, for "
                                        "links between nodes; changes the numbers) or as they are (none)",
                                choices=("none", "bf16"), commands=TRAINING)
    data_ingest: str = opt("train", "how Ray workers get their images: train (one dataset for the run, split "
                                    "among the workers by Ray Train as they ask: fastest; a resume continues "
                                    "from the checkpoint's count of images) or exact (each worker its own "
                                    "ordered stream: bit-identical weights after any restart)",
                           choices=("train", "exact"), commands=TRAINING)
    cpus_per_worker: float = opt(1.0, "CPUs reserved per Ray worker (data tasks use what is left)", minimum=0.0,
                                 commands=RAY)
    worker_resources: Optional[str] = opt(None, "JSON object of extra Ray resources per worker, e.g. "
                                                '{"spot_gpu": 1} to place workers on one node type', commands=RAY)
    address: Optional[str] = opt(None, "Ray cluster to join (default: start a local one)", commands=RAY,
                                 process=True)
    storage_path: Optional[str] = opt(None, "where a Ray run keeps everything (checkpoints, weights, TensorBoard, "
                                            "result.json) in <storage_path>/<name>: s3://bucket/prefix on a "
                                            "cluster (default: checkpoints_dir)", commands=TRAINING, process=True)
    shared_filesystem: bool = opt(False, "a local dataroot/storage_path is on a filesystem every Ray node mounts "
                                         "(NFS, EFS): allow it on a cluster of several nodes", commands=RAY,
                                 process=True)
    storage_options: Optional[str] = opt(None, "JSON object of S3 settings: access_key, secret_key, session_token, "
                                               "region, endpoint_url (default: the AWS_* variables)",
                                 commands=STORAGE, process=True)
    poll_secs: float = opt(0.25, "how often Ray Train's controller polls its workers: a report is taken at a "
                                "poll (one per poll; the run's end waits for its last) and a lost worker is "
                                "noticed at one (Ray's own default: 2; RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, when "
                                "set, wins)", minimum=0.01, maximum=60.0, commands=RAY)
    max_failures: int = opt(3, "restarts after a worker fails or a node is lost (-1: without limit); "
                               "preemptions the cloud announces are counted apart, without limit", minimum=-1,
                               commands=TRAINING)
    resume: Optional[str] = opt(None, "continue a Ray run after its driver is gone: <storage_path>/<name>",
                                commands=TRAINING, process=True)
    # --- test ---
    results_dir: str = opt("./results/", "where test results go", commands=("test",), process=True)
    num_test: int = opt(50, "how many test images to run", minimum=1, commands=("test",))
    aspect_ratio: float = opt(1.0, "aspect ratio of saved result images", minimum=0.0, commands=("test", "translate"))
    eval: bool = opt(False, "use eval mode (batch norm, dropout) at test time", commands=TEST_TIME)
    model: str = opt("cycle_gan", "cycle_gan: both directions from testA/testB; test: one generator", choices=("cycle_gan", "test"),
                     commands=("train", "bench", "test"))
    model_suffix: str = opt("", "with --model test, loads latest_net_G<suffix>.pth", commands=("test",))

    # ------------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay

    @property
    def run_dir(self) -> Path:
        return Path(self.checkpoints_dir) / self.name

    @property
    def distributed(self) -> bool:
        remote = any(str(v or "").startswith(("s3://", "gs://", "gcs://"))
                     for v in (self.dataroot, self.storage_path, self.resume))
        return self.max_workers > 0 or remote or bool(self.address) or bool(self.resume)

    @property
    def min_workers(self) -> int:
        return int(self.num_workers.split("-")[0])

    @property
    def max_workers(self) -> int:
        return int(self.num_workers.split("-")[-1])

    def to_dict(self) -> dict[str, Any]:
        """All options; storage_options (which may hold credentials) is left out: files and logs never see it."""
        d = dataclasses.asdict(self)
        d["storage_options"] = None
        if math.isinf(d["max_dataset_size"]):
            d["max_dataset_size"] = "inf"  # keeps YAML and checkpoints free of float specials
        return d


# Options whose reference default differs at test time (test_options.py).
TEST_DEFAULTS = {"phase": "test", "load_size": 256, "no_flip": True, "serial_batches": True, "num_threads": 0,
                 "batch_size": 1,
                 # The identity loss is a training term: it must not stop testing a 1 <-> 3 channel model.
                 "lambda_identity": 0.0}

FIELDS = {f.name: f for f in dataclasses.fields(Config)}
HINTS = typing.get_type_hints(Config)


SECRET_WORDS = ("secret", "token", "password", "credential", "key")  # in a key's name: its value is never shown


def shown(key: str, value: Any) -> str:
    """A value as an error message shows it: a short scalar of a key that holds no secret as it is,
    anything else by its type only (a mapping may hold credentials; a huge value would flood the log)."""
    secret = key == "storage_options" or any(word in key.lower() for word in SECRET_WORDS)
    if not secret and isinstance(value, (bool, int, float, str)) and len(repr(value)) <= 80:
        return repr(value)
    return f"a value of type {type(value).__name__}"


def _coerce(key: str, value: Any) -> Any:
    """Convert a value from YAML or a checkpoint to the schema's type, or raise naming the key."""
    hint = HINTS[key]
    optional = typing.get_origin(hint) is typing.Union
    base = [a for a in typing.get_args(hint) if a is not type(None)][0] if optional else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be empty")
    bad = ConfigError(f"{key}: {shown(key, value)} is not a valid {base.__name__}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if base is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if base is float:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise bad


NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a run's or a sweep's name: one folder


def check_name(key: str, name: object) -> None:
    """A name that becomes a folder (``<checkpoints_dir>/<name>``, ``<storage_path>/<name>``) is one
    folder name: never a path that leaves its parent."""
    if not isinstance(name, str) or not re.fullmatch(NAME, name):
        raise ConfigError(f"{key}: {shown(key, name)} is not a folder name (letters, digits, '_', '.', '-'; not "
                          f"starting with '.' or '-')")


def validate(cfg: Config) -> Config:
    for key, f in FIELDS.items():
        value = getattr(cfg, key)
        choices, minimum, maximum = f.metadata["choices"], f.metadata["minimum"], f.metadata["maximum"]
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}: {shown(key, value)} is not one of {', '.join(map(str, choices))}")
        if minimum is not None and value is not None and value < minimum:
            raise ConfigError(f"{key}: {shown(key, value)} is below the minimum {minimum}")
        if maximum is not None and value is not None and value > maximum:
            raise ConfigError(f"{key}: {shown(key, value)} is above the maximum {maximum}")
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"{key}: NaN is not allowed")
    check_name("name", cfg.name)
    if cfg.preprocess in ("resize_and_crop", "scale_width_and_crop") and cfg.load_size < cfg.crop_size:
        raise ConfigError(f"crop_size: {cfg.crop_size} is larger than load_size {cfg.load_size} "
                          f"with preprocess {cfg.preprocess}")
    if cfg.netG.startswith("unet") and cfg.preprocess != "none":
        downs = 8 if cfg.netG == "unet_256" else 7
        if cfg.crop_size % 2**downs:
            raise ConfigError(f"crop_size: {cfg.crop_size} must be a multiple of {2**downs} for netG {cfg.netG}")
    if not re.fullmatch(r"\d+(-\d+)?", cfg.num_workers) or cfg.min_workers > cfg.max_workers:
        raise ConfigError(f"num_workers: {cfg.num_workers!r} is not N or MIN-MAX with MIN <= MAX")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"device: {cfg.device!r} is not auto, cpu, cuda or cuda:N")
    if cfg.device != "auto":  # auto is checked once the model knows its device
        check_device_options(cfg, "cuda" if cfg.device.startswith("cuda") else "cpu")
    if cfg.compile != "none" and cfg.gan_mode == "wgangp":
        raise ConfigError(f"compile: {cfg.compile!r} does not work with gan_mode 'wgangp' (its gradient "
                          f"penalty needs double backward through the compiled graph); use compile none")
    if cfg.total_epochs < 1:
        raise ConfigError(f"n_epochs: n_epochs + n_epochs_decay must be at least 1 (got {cfg.n_epochs} + "
                          f"{cfg.n_epochs_decay})")
    if cfg.epoch_count > cfg.total_epochs:
        raise ConfigError(f"epoch_count: {cfg.epoch_count} is after the last epoch (n_epochs + n_epochs_decay = "
                          f"{cfg.total_epochs}): nothing would be trained")
    if cfg.lambda_identity > 0 and cfg.input_nc != cfg.output_nc:  # G_A(real_B) must fit G_A's input
        raise ConfigError(f"lambda_identity: {cfg.lambda_identity} needs input_nc == output_nc (got input_nc "
                          f"{cfg.input_nc}, output_nc {cfg.output_nc}); set lambda_identity 0")
    return cfg


def patch_size(size: int, n_layers: int) -> int:
    """The side of a PatchGAN's output for an input of ``size`` (networks.NLayerDiscriminator: a 4x4
    stride-2 convolution, n_layers - 1 more, then two 4x4 stride-1 ones)."""
    for _ in range(n_layers):
        size = (size + 2 - 4) // 2 + 1
    return size - 2


def check_trainable(cfg: Config) -> None:
    """What only training needs, refused before anything starts: the discriminator's patches must fit the
    crop (a 16-pixel crop left the default PatchGAN nothing to score and failed at the first step)."""
    if cfg.netD == "pixel" or cfg.preprocess == "none":
        return
    layers = 3 if cfg.netD == "basic" else cfg.n_layers_D
    if patch_size(cfg.crop_size, layers) < 1:
        smallest = next(s for s in range(1, MAX_IMAGE_SIZE) if patch_size(s, layers) >= 1)
        raise ConfigError(f"crop_size: {cfg.crop_size} is too small for netD {cfg.netD} with {layers} layers "
                          f"(at least {smallest}); use a larger crop_size, fewer n_layers_D or netD pixel")


def check_device_options(cfg: Config, device_type: str) -> None:
    """Refuse, naming the key, options that cannot work on the device the run resolved to."""
    if device_type == "cuda":
        if cfg.cuda_graphs:
            raise ConfigError("cuda_graphs: True is not implemented yet (capturing the step needs static "
                              "buffers for the image pool and the losses, and a GPU to verify it); use compile")
        return
    if cfg.amp == "fp16":
        raise ConfigError(f"amp: 'fp16' needs a CUDA device (device {cfg.device!r} is {device_type}); "
                          f"use amp bf16 or none")
    for key in ("cudnn_benchmark", "cuda_graphs"):
        if getattr(cfg, key):
            raise ConfigError(f"{key}: True needs a CUDA device (device {cfg.device!r} is {device_type})")


def from_dict(values: dict[str, Any], base: Optional[dict[str, Any]] = None, source: str = "config") -> Config:
    """Build a validated Config from schema defaults, then ``base``, then ``values``."""
    merged: dict[str, Any] = {}
    for layer in (base or {}), values:
        for key, value in layer.items():
            if key not in FIELDS:
                close = difflib.get_close_matches(key, FIELDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{key}: unknown option in {source}{hint}")
            merged[key] = _coerce(key, value)
    return validate(Config(**merged))


MAX_YAML_BYTES = 1 << 20  # an options file is a few kilobytes


class _NoAliases(yaml.SafeLoader):
    """Plain YAML: anchors and aliases (``&a`` / ``*a``) are refused, so a small file cannot expand into
    billions of items (the "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (*name) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str, source: str) -> Any:
    """YAML from outside (an options file, a run's or a sweep's stored files), bounded in size and without
    aliases; errors name ``source``."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"config: {source!r} is {len(text)} bytes; an options file may have at most "
                          f"{MAX_YAML_BYTES}")
    try:
        return yaml.load(text, Loader=_NoAliases)
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {source!r} is not valid YAML: {e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:  # read no more than the limit (and one byte to know it is over)
            raw = f.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config: file {str(path)!r} does not exist") from None
    data = parse_yaml(raw.decode("utf-8", errors="replace"), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {str(path)!r} must hold a mapping of option: value")
    return data




def with_suffix(cfg: Config, suffix: str, name_from_file: bool = False) -> Config:
    """The reference's --suffix: name becomes name_<suffix formatted with the options>. Applied once,
    where a command line becomes a Config; suffix is no option of its own, so a saved train_opt.yaml
    holds the suffixed name and nothing that would append it again. A name read from a file that
    already ends in the suffix (a run's train_opt.yaml given with the same flags) is left as it is."""
    if not suffix:
        return cfg
    try:
        formatted = suffix.format(**cfg.to_dict())
    except KeyError as e:
        raise ConfigError(f"suffix: {suffix!r} names {{{e.args[0]}}}, which is not an option") from None
    except (ValueError, IndexError) as e:
        raise ConfigError(f"suffix: {suffix!r} is not a valid format string ({e})") from None
    if name_from_file and cfg.name.endswith("_" + formatted):
        return cfg
    check_name("suffix", f"{cfg.name}_{formatted}")
    return dataclasses.replace(cfg, name=f"{cfg.name}_{formatted}")
