"""The config schema: reference defaults, YAML + flags layering, errors that name key and value."""
import math

import pytest

from cyclegan.core.config import BUILTIN_PAIRS, Config, ConfigError, from_dict
from cyclegan.core.synth import PAIRS


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


def test_round_trip_through_a_checkpoint_dict():
    cfg = from_dict({"ngf": 8, "max_dataset_size": 100})
    assert from_dict(cfg.to_dict()) == cfg
    assert from_dict(Config().to_dict()) == Config()


# ---------------------------------------------------------------- hostile and broken input (issue 22: 3, 7)
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_storage_options_that_are_not_an_object_are_refused_without_echoing_them():
    from cyclegan.core.errors import DataError
    from cyclegan.core.storage import parse_options
    with pytest.raises(DataError) as e:
        parse_options(f'["{SECRET}"]')
    assert str(e.value) == "storage_options: a JSON object of settings is needed, not a list"
    with pytest.raises(DataError) as e:
        parse_options(f'{{"{SECRET}": 1, "regoin": "x"}}')
    assert SECRET not in str(e.value) and "['regoin'] and 1 other(s)" in str(e.value)


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
