"""The options on the command line: flags over the --config file over the schema's defaults, the reference's
command lines, and errors that name the key and value (and never a secret) before anything runs. The schema
itself: tests/core/test_config.py."""
import subprocess
import sys

import pytest

from cyclegan.cli import build_parser
from cyclegan.commands.options import from_args
from cyclegan.core.config import ConfigError, from_dict

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"  # distinctive, to search the output for


def parse(argv):
    return build_parser().parse_args(argv)


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("netG: unet_128\nngf: 32\nlambda_A: 5\nno_flip: true\n")
    cfg = from_args(parse(["train", "--config", str(path), "--ngf", "16", "--no_flip"]))
    assert (cfg.netG, cfg.ngf, cfg.lambda_A, cfg.no_flip, cfg.ndf) == ("unet_128", 16, 5.0, True, 64)


def test_reference_boolean_flags():
    cfg = from_args(parse(["train", "--serial_batches", "--continue_train", "--dropout"]))
    assert cfg.serial_batches and cfg.continue_train and cfg.no_dropout is False


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pool_sise: 10\n")
    with pytest.raises(ConfigError, match=r"pool_sise: unknown option in config file .*bad.yaml"):
        from_args(parse(["train", "--config", str(path)]))


def test_cli_reports_config_errors_without_a_traceback(capsys):
    from cyclegan.cli import main
    assert main(["train", "--netD", "huge"]) == 2
    assert "netD: 'huge' is not one of basic, n_layers, pixel" in capsys.readouterr().err


def test_reference_command_lines_run_unchanged():
    cfg = from_args(parse(["train", "--dataroot", "./datasets/maps", "--name", "maps_cyclegan", "--model",
                           "cycle_gan", "--display_id", "-1", "--gpu_ids", "-1", "--no_html"]))
    assert (cfg.name, cfg.device) == ("maps_cyclegan", "cpu")
    assert from_args(parse(["test", "--gpu_ids", "1,2"])).device == "cuda:1"


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
