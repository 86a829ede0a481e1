"""The config schema: reference defaults, YAML + flags layering, errors that name key and value."""
import math
import subprocess
import sys

import pytest

from cyclegan.cli import build_parser
from cyclegan.commands.options import from_args
from cyclegan.core.config import BUILTIN_PAIRS, Config, ConfigError, from_dict
from cyclegan.core.synth import PAIRS


def parse(argv):
    return build_parser().parse_args(argv)


def test_defaults_are_the_reference_defaults():
    c = Config()
    assert (c.netG, c.netD, c.norm, c.gan_mode, c.ngf, c.ndf, c.n_layers_D) == \
        ("resnet_9blocks", "basic", "instance", "lsgan", 64, 64, 3)
    assert (c.lambda_A, c.lambda_B, c.lambda_identity, c.pool_size) == (10.0, 10.0, 0.5, 50)
    assert (c.lr, c.beta1, c.lr_policy, c.n_epochs, c.n_epochs_decay) == (0.0002, 0.5, "linear", 100, 100)
    assert (c.load_size, c.crop_size, c.batch_size, c.preprocess) == (286, 256, 1, "resize_and_crop")
    assert (c.save_latest_freq, c.save_epoch_freq, c.checkpoints_dir) == (5000, 5, "./checkpoints")
    assert c.no_dropout is True and math.isinf(c.max_dataset_size)


def test_builtin_choices_match_the_pairs():
    assert set(BUILTIN_PAIRS) == set(PAIRS)


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("netG: unet_128\nngf: 32\nlambda_A: 5\nno_flip: true\n")
    cfg = from_args(parse(["train", "--config", str(path), "--ngf", "16", "--no_flip"]))
    assert (cfg.netG, cfg.ngf, cfg.lambda_A, cfg.no_flip, cfg.ndf) == ("unet_128", 16, 5.0, True, 64)


def test_reference_boolean_flags():
    cfg = from_args(parse(["train", "--serial_batches", "--continue_train", "--dropout"]))
    assert cfg.serial_batches and cfg.continue_train and cfg.no_dropout is False


@pytest.mark.parametrize("values, message", [
    ({"netG": "resnet_7blocks"}, "netG: 'resnet_7blocks' is not one of"),
    ({"ngf": "wide"}, "ngf: 'wide' is not a valid int"),
    ({"lambda_A": -1}, "lambda_A: -1.0 is below the minimum"),
    ({"pool_size": 1.5}, "pool_size: 1.5 is not a valid int"),
    ({"lamda_A": 10}, "lamda_A: unknown option in config (did you mean 'lambda_A'?)"),
    ({"load_size": 200, "crop_size": 256}, "crop_size: 256 is larger than load_size 200"),
    ({"netG": "unet_256", "crop_size": 200, "load_size": 286}, "crop_size: 200 must be a multiple of 256"),
    ({"n_epochs": 0, "n_epochs_decay": 0}, "n_epochs: n_epochs + n_epochs_decay must be at least 1"),
    ({"amp": "fp8"}, "amp: 'fp8' is not one of"),
    ({"name": "../escape"}, "name: '../escape' is not a folder name"),
    ({"name": "runs/a"}, "name: 'runs/a' is not a folder name"),
])
def test_bad_values_name_the_key_and_value(values, message):
    with pytest.raises(ConfigError) as e:
        from_dict(values)
    assert message in str(e.value)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pool_sise: 10\n")
    with pytest.raises(ConfigError, match=r"pool_sise: unknown option in config file .*bad.yaml"):
        from_args(parse(["train", "--config", str(path)]))


def test_cli_reports_config_errors_without_a_traceback(capsys):
    from cyclegan.cli import main
    assert main(["train", "--netD", "huge"]) == 2
    assert "netD: 'huge' is not one of basic, n_layers, pixel" in capsys.readouterr().err


def test_round_trip_through_a_checkpoint_dict():
    cfg = from_dict({"ngf": 8, "max_dataset_size": 100})
    assert from_dict(cfg.to_dict()) == cfg
    assert from_dict(Config().to_dict()) == Config()


def test_reference_command_lines_run_unchanged():
    cfg = from_args(parse(["train", "--dataroot", "./datasets/maps", "--name", "maps_cyclegan", "--model",
                           "cycle_gan", "--display_id", "-1", "--gpu_ids", "-1", "--no_html"]))
    assert (cfg.name, cfg.device) == ("maps_cyclegan", "cpu")
    assert from_args(parse(["test", "--gpu_ids", "1,2"])).device == "cuda:1"


# ---------------------------------------------------------------- hostile and broken input (issue 22: 3, 7)
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_a_config_error_never_prints_a_secret_and_names_the_key_and_type(tmp_path):
    """storage_options given as a YAML mapping with a secret_key: the error names the key and the value's
    type, not the value (it printed the whole mapping, secret and all)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(f"storage_options:\n  access_key: AKIAEXAMPLE\n  secret_key: {SECRET}\n  region: us-west-2\n")
    run = subprocess.run([sys.executable, "-m", "cyclegan.cli", "train", "--config", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == "error: storage_options: a value of type dict is not a valid str"
    assert SECRET not in run.stdout + run.stderr and "AKIAEXAMPLE" not in run.stdout + run.stderr
    # A key named like a secret never shows its value; short plain values still do; long ones by type.
    with pytest.raises(ConfigError, match=r"^ngf: 'abc' is not a valid int$"):
        from_dict({"ngf": "abc"})
    with pytest.raises(ConfigError, match=r"^name: a value of type list is not a valid str$"):
        from_dict({"name": [SECRET]})
    with pytest.raises(ConfigError, match=r"^netG: a value of type str is not one of"):
        from_dict({"netG": "x" * 500})


def test_storage_options_that_are_not_an_object_are_refused_without_echoing_them():
    from cyclegan.core.errors import DataError
    from cyclegan.core.storage import parse_options
    with pytest.raises(DataError) as e:
        parse_options(f'["{SECRET}"]')
    assert str(e.value) == "storage_options: a JSON object of settings is needed, not a list"
    with pytest.raises(DataError) as e:
        parse_options(f'{{"{SECRET}": 1, "regoin": "x"}}')
    assert SECRET not in str(e.value) and "['regoin'] and 1 other(s)" in str(e.value)


def test_a_yaml_alias_bomb_is_refused_at_once_naming_the_file(tmp_path):
    """418 bytes that expand to 10^8 items took 43 s, 2.9 GB and printed a 722 MB error."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    lines.append("name: *h")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1000
    with pytest.raises(ConfigError) as e:
        from_args(parse(["train", "--config", str(bomb)]))
    message = str(e.value)
    assert message.startswith(f"config: '{bomb}' is not valid YAML: ") and "aliases" in message
    assert len(message) < 2000  # refused at the first alias, not expanded
    big = tmp_path / "big.yaml"
    big.write_text("name: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="an options file may have at most 1048576"):
        from_args(parse(["train", "--config", str(big)]))


# ---------------------------------------------------------------- values that passed and then crashed (22: 8, 9)
@pytest.mark.parametrize("values, message", [
    ({"load_size": 40000}, "load_size: 40000 is above the maximum 8192"),
    ({"crop_size": 1000000000, "load_size": 1000000000}, "load_size: 1000000000 is above the maximum 8192"),
    ({"seed": 1e23}, "seed: 99999999999999991611392 is above the maximum 4294967295"),
    ({"device": "cuda:abc"}, "device: 'cuda:abc' is not auto, cpu, cuda or cuda:N"),
    ({"n_epochs": 1, "n_epochs_decay": 0, "epoch_count": 5},
     "epoch_count: 5 is after the last epoch (n_epochs + n_epochs_decay = 1): nothing would be trained"),
    ({"ngf": 100000}, "ngf: 100000 is above the maximum 1024"),
])
def test_a_value_that_would_crash_a_run_is_refused_at_load_naming_the_key(values, message):
    with pytest.raises(ConfigError) as e:
        from_dict(values)
    assert str(e.value) == message


def test_a_crop_too_small_for_the_discriminator_is_refused_before_training(tiny_cfg):
    """--crop_size 16 with the default PatchGAN: a traceback at the first step before."""
    from cyclegan.core.config import check_trainable
    from cyclegan.core.trainer import Trainer
    cfg = tiny_cfg(name="small", crop_size=16, load_size=16)
    with pytest.raises(ConfigError, match=r"^crop_size: 16 is too small for netD basic with 3 layers \(at least 24\)"):
        Trainer(cfg, progress_bar=False)
    check_trainable(tiny_cfg(name="ok", crop_size=24, load_size=24))  # the smallest that works
    check_trainable(tiny_cfg(name="pixel", crop_size=16, load_size=16, netD="pixel"))
    run = subprocess.run([sys.executable, "-m", "cyclegan.cli", "train", "--crop_size", "16", "--load_size", "16",
                          "--builtin_size", "16"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: crop_size: 16 is too small for netD basic")


@pytest.mark.parametrize("saved, message", [
    ("ngf: abc\n", "train_opt.yaml: ngf: 'abc' is not a valid int"),
    ("netG: os.system\n", "train_opt.yaml: netG: 'os.system' is not one of resnet_9blocks"),
    ("- not a mapping\n", "train_opt.yaml must hold a mapping of option: value"),
])
def test_a_generator_folders_train_opt_is_validated_like_flags(tmp_path, saved, message, capsys):
    from cyclegan.cli import main
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train_opt.yaml").write_text(saved)
    (tmp_path / "in").mkdir()
    assert main(["translate", "--generator", str(run_dir), "--input", str(tmp_path / "in"),
                 "--output", str(tmp_path / "out")]) == 2  # the user's error, caught: no traceback
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_name_that_would_leave_its_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    """--name became <checkpoints_dir>/<name> (and <storage_path>/<name> for a Ray run, whose lease was
    written there before any other check): '../escape' wrote beside the folder asked for."""
    from cyclegan.cli import main
    ck = tmp_path / "ck"
    for argv in (["--name", "../escape"], ["--name", "run", "--suffix", "{dataroot}"]):
        code = main(["train", "--num_workers", "2", "--storage_path", str(ck), "--checkpoints_dir", str(ck),
                     "--dataroot", str(tmp_path / "data/x"), *argv])
        assert code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and "is not a folder name" in last, last
    assert not any(tmp_path.iterdir())  # nothing written, not even the checkpoints folder


# ---------------------------------------------------------------- one schema for options and search settings
def sweep_file(**search):
    return {"name": "sw", "datasets": ["seasons"], "space": {"lr": [0.0001, 0.0002]}, "search": search}


def test_the_search_settings_are_read_and_checked_as_the_options_are():
    """The experiment file's search settings took no "yes" for true and refused "8" for 8, while the
    options took both: the same machinery reads both now, with the same messages."""
    from cyclegan.core.experiment import parse_experiment
    assert from_dict({"no_flip": "yes", "ngf": "8"}).no_flip is True
    search = parse_experiment(sweep_file(synch="yes", algorithm="pbt", num_samples="8", grace_period=2)).search
    assert (search.synch, search.num_samples) == (True, 8)
    for options, setting, message in [
        ({"no_flip": "maybe"}, {"synch": "maybe"}, "'maybe' is not a valid bool"),
        ({"ngf": "wide"}, {"num_samples": "wide"}, "'wide' is not a valid int"),
        ({"ngf": 0}, {"num_samples": 0}, "0 is below the minimum 1"),
        ({"lr": float("nan")}, {"time_budget_s": float("nan")}, "NaN is not allowed"),
        ({"netG": "huge"}, {"metric": "huge"}, "'huge' is not one of"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{next(iter(options))}: {message}"):
            from_dict(options)
        with pytest.raises(ConfigError, match=rf"^search\.{next(iter(setting))}: {message}"):
            parse_experiment(sweep_file(**setting))
    with pytest.raises(ConfigError, match=r"^search\.grace_period: 0\.0 is not above 0$"):
        parse_experiment(sweep_file(grace_period=0))
    with pytest.raises(ConfigError, match=r"^search\.hyperparam_mutations: 'lr' is not a valid list$"):
        parse_experiment(sweep_file(algorithm="pbt", hyperparam_mutations="lr"))
