"""The one schema for every option: names, types, defaults, allowed values, and what each is for.

Names and defaults follow the reference ``train.py``/``test.py`` so existing commands work as
they are. A YAML file uses the same keys; command-line flags override the file. Everything is
validated at load, and errors name the bad key and value (core/schema.py: how). Each option's
declaration also says what it is for (its ``Role``, the networks it shapes, whether population-based
training changes it mid-run, its test-time default); every list of options another module needs is
derived from those below the class.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Optional

from .roles import (
    ANY,
    BASE,
    CARRIED,
    DATA,
    PLACED,
    PROCESS,
    PROCESS_PER_TRIAL,
    RAY,
    RUN,
    SEARCH,
    STORAGE,
    TEST_TIME,
    TRAINED,
    TRAINING,
    WHICH,
    opt,
)

# The YAML readers, also imported from here:
from .schema import MAX_YAML_BYTES as MAX_YAML_BYTES
from .schema import ConfigError, Schema, shown
from .schema import load_yaml as load_yaml
from .schema import parse_yaml as parse_yaml

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

MAX_IMAGE_SIZE = 8192  # pixels a side: a 8192x8192 RGB float image is already 805 MB


@dataclass
class Config:
    # --- experiment and data (reference names) ---
    dataroot: Optional[str] = opt(None, DATA, "dataset folder with trainA/trainB/testA/testB; empty: a built-in "
                                  "pair", commands=RUN)
    name: str = opt("experiment_name", WHICH, "run name: checkpoints go to <checkpoints_dir>/<name>", commands=RUN)
    checkpoints_dir: str = opt("./checkpoints", PROCESS, "where runs are stored", commands=RUN)
    phase: str = opt("train", DATA, "train, test, val ...: which <phase>A/<phase>B folders to read", test="test",
                     commands=("train", "bench", "test", "eval", "export"))
    direction: str = opt("AtoB", TRAINED, "AtoB or BtoA", choices=("AtoB", "BtoA"), commands=ANY)
    serial_batches: bool = opt(False, TRAINED, "take images in order; otherwise B is drawn at random", test=True,
                               commands=RUN)
    num_threads: int = opt(4, CARRIED, "data-loading worker processes", minimum=0, test=0, commands=RUN)
    batch_size: int = opt(1, TRAINED, "images per iteration (per worker)", minimum=1, maximum=4096, test=1,
                          commands=ANY)
    load_size: int = opt(286, TRAINED, "scale images to this size", minimum=1, maximum=MAX_IMAGE_SIZE, test=256,
                         commands=ANY)
    crop_size: int = opt(256, TRAINED, "then crop to this size", minimum=1, maximum=MAX_IMAGE_SIZE, commands=ANY)
    max_dataset_size: float = opt(math.inf, TRAINED, "use at most this many images per domain", minimum=1,
                                  commands=RUN)
    preprocess: str = opt("resize_and_crop", TRAINED, "image scaling and cropping", choices=PREPROCESS_MODES,
                          commands=ANY)
    no_flip: bool = opt(False, TRAINED, "do not flip images horizontally for augmentation", test=True, commands=RUN)
    input_nc: int = opt(3, TRAINED, "channels of domain A images (1: grayscale)", choices=(1, 3), shapes="GD",
                        commands=ANY)
    output_nc: int = opt(3, TRAINED, "channels of domain B images (1: grayscale)", choices=(1, 3), shapes="GD",
                         commands=ANY)
    # --- networks ---
    netG: str = opt("resnet_9blocks", TRAINED, "generator architecture", choices=GENERATORS, shapes="G",
                    commands=ANY)
    netD: str = opt("basic", TRAINED, "discriminator architecture", choices=DISCRIMINATORS, shapes="D",
                    commands=RUN)
    n_layers_D: int = opt(3, TRAINED, "discriminator depth when netD is n_layers", minimum=1, maximum=8, shapes="D",
                          commands=RUN)
    ngf: int = opt(64, TRAINED, "generator filters in the last conv layer", minimum=1, maximum=1024, shapes="G",
                   commands=ANY)
    ndf: int = opt(64, TRAINED, "discriminator filters in the first conv layer", minimum=1, maximum=1024,
                   shapes="D", commands=RUN)
    norm: str = opt("instance", TRAINED, "normalization layers", choices=NORMS, shapes="GD", commands=ANY)
    init_type: str = opt("normal", TRAINED, "weight initialisation", choices=INIT_TYPES, commands=ANY)
    init_gain: float = opt(0.02, TRAINED, "scale of normal/xavier/orthogonal initialisation", minimum=0.0,
                           commands=ANY)
    no_dropout: bool = opt(True, TRAINED, "no dropout in the generator (CycleGAN default; --dropout turns it on)",
                           shapes="G", commands=ANY)
    # --- objective ---
    gan_mode: str = opt("lsgan", TRAINED, "adversarial loss", choices=GAN_MODES, commands=TRAINING)
    lambda_A: float = opt(10.0, TRAINED, "weight of cycle loss A -> B -> A", minimum=0.0, scheduled=True,
                          commands=TRAINING)
    lambda_B: float = opt(10.0, TRAINED, "weight of cycle loss B -> A -> B", minimum=0.0, scheduled=True,
                          commands=TRAINING)
    # Its test default: the identity loss is a training term, it must not stop testing a 1 <-> 3 channel model.
    lambda_identity: float = opt(0.5, TRAINED, "identity loss weight, relative to lambda_A/lambda_B", minimum=0.0,
                                 scheduled=True, test=0.0, commands=TRAINING)
    lambda_gp: float = opt(10.0, TRAINED, "gradient-penalty weight for gan_mode wgangp", minimum=0.0,
                           commands=TRAINING)
    pool_size: int = opt(50, TRAINED, "generated images kept for the discriminators (0: no pool)", minimum=0,
                         scheduled=True, commands=TRAINING)
    # --- optimisation ---
    lr: float = opt(0.0002, TRAINED, "Adam learning rate", minimum=0.0, scheduled=True, commands=TRAINING)
    beta1: float = opt(0.5, TRAINED, "Adam beta1", minimum=0.0, commands=TRAINING)
    lr_policy: str = opt("linear", TRAINED, "learning-rate schedule", choices=LR_POLICIES, commands=TRAINING)
    n_epochs: int = opt(100, TRAINED, "epochs at the initial learning rate", minimum=0, commands=TRAINING)
    n_epochs_decay: int = opt(100, TRAINED, "epochs of decay to zero", minimum=0, commands=TRAINING)
    lr_decay_iters: int = opt(50, TRAINED, "epochs between x0.1 steps for lr_policy step", minimum=1,
                              commands=TRAINING)
    epoch_count: int = opt(1, TRAINED, "number of the first epoch", minimum=1, commands=TRAINING)
    seed: int = opt(0, TRAINED, "seeds weights, data order, augmentation and the image pools", minimum=0,
                    maximum=2**32 - 1, commands=ANY)
    # --- saving and resuming ---
    save_latest_freq: int = opt(5000, CARRIED, "save the latest checkpoint every this many training images",
                                minimum=1, commands=TRAINING)
    save_epoch_freq: int = opt(5, CARRIED, "save a checkpoint every this many epochs", minimum=1, commands=TRAINING)
    save_latest_secs: float = opt(0.0, CARRIED, "also save the latest checkpoint once this many seconds have passed "
                                  "since the last save (0: off); for spot clusters, where what is lost is time, not "
                                  "images", minimum=0.0, commands=TRAINING)
    notice_check_freq: int = opt(8, CARRIED, "Ray workers first agree after this many training images (one small "
                                 "all-reduce) on a spot notice or a due --save_latest_secs save, so all save at the "
                                 "same step", minimum=1, commands=TRAINING)
    notice_check_secs: float = opt(5.0, CARRIED, "after that, they agree about this often: the next check's image "
                                   "count comes from the step time they agreed on, so no step waits for the host; a "
                                   "notice is acted on about this late", minimum=0.0, maximum=60.0, commands=TRAINING)
    save_by_iter: bool = opt(False, CARRIED, "the periodic save writes reference weights iter_<n> instead of latest",
                             commands=TRAINING)
    continue_train: bool = opt(False, PROCESS_PER_TRIAL, "continue from the latest checkpoint of this run",
                               commands=TRAINING)
    epoch: str = opt("latest", WHICH, "which checkpoint to load: latest, an epoch number, or iter_<n>", commands=ANY)
    load_iter: int = opt(0, WHICH, "if > 0, load the weights of this iteration (iter_<n>); test results go to "
                         "<phase>_<epoch>_iter<n>", minimum=0, commands=ANY)
    keep_checkpoints: int = opt(3, CARRIED, "full-state checkpoints kept (older ones are deleted)", minimum=1,
                                commands=TRAINING)
    print_freq: int = opt(100, CARRIED, "log losses every this many training images", minimum=1, commands=TRAINING)
    # --- this implementation ---
    device: str = opt("auto", CARRIED, "auto (CUDA when present), cpu, cuda, cuda:N", commands=ANY)
    amp: str = opt("none", TRAINED, "mixed precision: bf16 (CUDA or CPU) or fp16 (CUDA only, with loss scaling); "
                   "default none (fp32): bf16 measured 1.4-2x faster on CPU but changes the numbers",
                   choices=AMP_MODES, commands=TRAINING)
    channels_last: bool = opt(False, CARRIED, "channels-last memory format (off: measured slower on CPU)",
                              commands=TRAINING)
    compile: str = opt("none", CARRIED, "torch.compile: networks (each network) or step (the forwards and losses of "
                       "each optimizer as one graph); default none: measured no faster than eager on CPU, with about "
                       "a minute of compilation first", choices=COMPILE_MODES, commands=TRAINING)
    fused_adam: bool = opt(False, TRAINED, "fused Adam kernels (CPU and CUDA): measured 8% faster on CPU; off by "
                           "default as it changes the rounding (the golden loss curve is the unfused Adam's)",
                           commands=TRAINING)
    cudnn_benchmark: bool = opt(False, CARRIED, "let cuDNN time the convolution algorithms for each input shape and "
                                "use the fastest (CUDA only)", commands=TRAINING)
    tensorboard: bool = opt(True, CARRIED, "write TensorBoard event files under the run folder", commands=TRAINING)
    image_log_freq: int = opt(1000, CARRIED, "log image grids every this many training images", minimum=1,
                              commands=TRAINING)
    eval_at_end: bool = opt(True, CARRIED, "score the final generators on the test split when it has ideal "
                            "translations", commands=TRAINING)
    builtin: str = opt("seasons", DATA, "built-in pair used when dataroot is empty", choices=BUILTIN_PAIRS,
                       commands=RUN)
    builtin_size: int = opt(64, TRAINED, "image size of the built-in pair", minimum=8, maximum=1024, commands=RUN)
    builtin_count: int = opt(200, TRAINED, "training images per domain of the built-in pair", minimum=1,
                             commands=RUN)
    # --- cyclegan translate ---
    translate_format: str = opt("png", CARRIED, "cyclegan translate: output images as png or jpeg",
                                choices=("png", "jpeg"), commands=("translate",))
    jpeg_quality: int = opt(95, CARRIED, "cyclegan translate: JPEG quality (1-95)", minimum=1,
                            commands=("translate",))
    concurrency: int = opt(0, CARRIED, "cyclegan translate on Ray: generator actors (0: one per GPU with --use_gpu, "
                           "else --num_workers)", minimum=0, commands=("translate",))
    # --- cyclegan export ---
    export_format: str = opt("both", CARRIED, "cyclegan export: onnx, torchscript or both",
                             choices=("onnx", "torchscript", "both"), commands=("export",))
    export_tolerance: float = opt(1e-4, CARRIED, "cyclegan export: the largest absolute difference from PyTorch's "
                                  "output (in [-1, 1]; a uint8 level is 0.0078) that an exported file may show in its "
                                  "check", minimum=0.0, commands=("export",))
    # --- distributed (Ray) ---
    num_workers: str = opt("0", PLACED, "0: train in this process; N: Ray Train with N workers; MIN-MAX: elastic, "
                           "fewer workers while capacity is short (s3://, gs://, --address, --resume imply 1)",
                           commands=RAY)
    use_gpu: bool = opt(False, PLACED, "request one GPU per Ray worker (an autoscaler then starts GPU nodes); NCCL "
                        "between them. Off: CPU workers, gloo", commands=RAY)
    grad_compression: str = opt("none", TRAINED, "Ray workers all-reduce the gradients as bf16 (half the bytes, for "
                                "links between nodes; changes the numbers) or as they are (none)",
                                choices=("none", "bf16"), commands=TRAINING)
    data_ingest: str = opt("train", TRAINED, "how Ray workers get their images: train (one dataset for the run, "
                           "split among the workers by Ray Train as they ask: fastest; a resume continues from the "
                           "checkpoint's count of images) or exact (each worker its own ordered stream: "
                           "bit-identical weights after any restart)", choices=("train", "exact"), commands=TRAINING)
    cpus_per_worker: float = opt(1.0, PLACED, "CPUs reserved per Ray worker (data tasks use what is left)",
                                 minimum=0.0, commands=RAY)
    worker_resources: Optional[str] = opt(None, PLACED, "JSON object of extra Ray resources per worker, e.g. "
                                          '{"spot_gpu": 1} to place workers on one node type', commands=RAY)
    address: Optional[str] = opt(None, PROCESS, "Ray cluster to join (default: start a local one)", commands=RAY)
    storage_path: Optional[str] = opt(None, PROCESS_PER_TRIAL, "where a Ray run keeps everything (checkpoints, "
                                      "weights, TensorBoard, result.json) in <storage_path>/<name>: "
                                      "s3://bucket/prefix on a cluster (default: checkpoints_dir)", commands=TRAINING)
    shared_filesystem: bool = opt(False, PROCESS, "a local dataroot/storage_path is on a filesystem every Ray node "
                                  "mounts (NFS, EFS): allow it on a cluster of several nodes", commands=RAY)
    storage_options: Optional[str] = opt(None, PROCESS_PER_TRIAL, "JSON object of S3 settings: access_key, "
                                         "secret_key, session_token, region, endpoint_url (default: the AWS_* "
                                         "variables)", commands=STORAGE)
    poll_secs: float = opt(0.25, CARRIED, "how often Ray Train's controller polls its workers: a report is taken at "
                           "a poll (one per poll; the run's end waits for its last) and a lost worker is noticed at "
                           "one (Ray's own default: 2; RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, when set, wins)",
                           minimum=0.01, maximum=60.0, commands=RAY)
    max_failures: int = opt(3, CARRIED, "restarts after a worker fails or a node is lost (-1: without limit); "
                            "preemptions the cloud announces are counted apart, without limit", minimum=-1,
                            commands=TRAINING)
    resume: Optional[str] = opt(None, PROCESS_PER_TRIAL, "continue a Ray run after its driver is gone: "
                                "<storage_path>/<name>", commands=TRAINING)
    # --- test ---
    results_dir: str = opt("./results/", PROCESS_PER_TRIAL, "where test results go", commands=("test",))
    num_test: int = opt(50, CARRIED, "how many test images to run", minimum=1, commands=("test",))
    aspect_ratio: float = opt(1.0, CARRIED, "aspect ratio of saved result images", minimum=0.0,
                              commands=("test", "translate"))
    eval: bool = opt(False, CARRIED, "use eval mode (batch norm, dropout) at test time", commands=TEST_TIME)
    model: str = opt("cycle_gan", CARRIED, "cycle_gan: both directions from testA/testB; test: one generator",
                     choices=("cycle_gan", "test"), commands=("train", "bench", "test"))
    model_suffix: str = opt("", CARRIED, "with --model test, loads latest_net_G<suffix>.pth", commands=("test",))

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


SCHEMA = Schema(Config)
FIELDS = SCHEMA.fields
HINTS = SCHEMA.hints


def keys_where(test) -> tuple[str, ...]:
    """The options whose declaration passes ``test`` (of a field's metadata), in the schema's order."""
    return tuple(key for key, f in FIELDS.items() if test(f.metadata))


# The lists other modules need, each derived from the declarations above:
RUN_KEYS = keys_where(lambda m: m["role"].rerun)  # a rerun must keep them (core/rerun.py)
ARCHITECTURE_KEYS = keys_where(lambda m: m["shapes"])  # shape a network: a checkpoint resumes a run that agrees
GENERATOR_SHAPE_KEYS = keys_where(lambda m: "G" in m["shapes"])  # shape a generator: what a run's weights need
SCHEDULED_KEYS = keys_where(lambda m: m["scheduled"])  # what population-based training changes mid-run
NOT_SEARCHABLE = frozenset(keys_where(lambda m: m["role"].sweep != SEARCH))  # a sweep's space may not hold them
BASE_MAY_SET = frozenset(keys_where(lambda m: m["role"].sweep == BASE))  # of those, what its base options may set
PROCESS_KEYS = frozenset(keys_where(lambda m: m["role"].process))  # never a stored run's (core/stored.py)
TEST_DEFAULTS = {key: f.metadata["test"] for key, f in FIELDS.items() if f.metadata["test"] is not MISSING}


NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a run's or a sweep's name: one folder


def check_name(key: str, name: object) -> None:
    """A name that becomes a folder (``<checkpoints_dir>/<name>``, ``<storage_path>/<name>``) is one
    folder name: never a path that leaves its parent."""
    if not isinstance(name, str) or not re.fullmatch(NAME, name):
        raise ConfigError(f"{key}: {shown(key, name)} is not a folder name (letters, digits, '_', '.', '-'; not "
                          f"starting with '.' or '-')")


def validate(cfg: Config) -> Config:
    """Each option as declared (schema.py), then what holds across options."""
    SCHEMA.check(cfg)
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
        return
    if cfg.amp == "fp16":
        raise ConfigError(f"amp: 'fp16' needs a CUDA device (device {cfg.device!r} is {device_type}); "
                          f"use amp bf16 or none")
    if cfg.cudnn_benchmark:
        raise ConfigError(f"cudnn_benchmark: True needs a CUDA device (device {cfg.device!r} is {device_type})")


def from_dict(values: dict[str, Any], base: Optional[dict[str, Any]] = None, source: str = "config") -> Config:
    """Build a validated Config from schema defaults, then ``base``, then ``values``."""
    return validate(Config(**SCHEMA.values(base or {}, values, source=source)))


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
