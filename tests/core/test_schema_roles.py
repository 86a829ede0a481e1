"""Every option says what it is for in its declaration, and the lists the other modules use are derived
from those roles: a field that declares none is found; a rerun is refused when an option it must keep
differs and goes on when only others do; the options declared to shape a network are those that do."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from cyclegan.core.config import (
    ARCHITECTURE_KEYS,
    FIELDS,
    GENERATOR_SHAPE_KEYS,
    HINTS,
    PROCESS_KEYS,
    RUN_KEYS,
    Config,
    ConfigError,
    from_dict,
)
from cyclegan.core.model import CycleGAN
from cyclegan.core.rerun import rerun_run
from cyclegan.core.roles import CARRIED, DATA, TRAINED, TRAINING, opt, role_problems
from cyclegan.core.schema import setting

# Values some options need to be another valid value (a text without choices has no generic other).
OTHER_TEXT = {"phase": "val", "device": "cpu", "num_workers": "1", "epoch": "5", "dataroot": "/data/other"}


def other_values(key: str, now) -> list:
    """Valid-looking values of ``key`` other than ``now``: its other choices, or one derived from its type."""
    meta = FIELDS[key].metadata
    if meta["choices"] is not None:
        return [c for c in meta["choices"] if c != now]
    if key in OTHER_TEXT:
        return [OTHER_TEXT[key]]
    hint = HINTS[key]
    if hint is bool:
        return [not now]
    if hint is int:
        return [now + 1 if meta["maximum"] is None or now < meta["maximum"] else now - 1]
    if hint is float:
        return [100.0 if math.isinf(now) else (now * 1.5 or 1.0)]
    return [f"{now or 'x'}_other"]  # a name, a folder, a JSON text no check reads here


def test_every_option_declares_its_roles():
    assert role_problems(Config) == []
    assert len(FIELDS) == 85 and "cuda_graphs" not in FIELDS  # refused on every device: gone


def test_a_field_that_declares_no_role_is_found():
    """A planted options class: the field declared without a role (or as a plain dataclass field) and
    those whose roles contradict each other are named; the field declared in full is not."""
    @dataclass
    class Planted:
        whole: int = opt(1, TRAINED, "declares every role", shapes="G", scheduled=True, test=0, commands=TRAINING)
        plain: int = setting(1, "a setting of the schema, without a role")
        bare: int = field(default=1)
        nowhere: int = opt(1, CARRIED, "no command takes it", commands=())
        stray: int = opt(1, CARRIED, "shapes a network a rerun may change", shapes="G", commands=TRAINING)
        odd: int = opt(1, TRAINED, "shapes a network that does not exist", shapes="X", commands=TRAINING)
        per_pair: int = opt(1, DATA, "changed mid-run, yet set by the sweep", scheduled=True, commands=TRAINING)

    problems = role_problems(Planted)
    assert [p.split(":")[0] for p in problems] == ["plain", "bare", "nowhere", "stray", "odd", "per_pair"]
    assert problems[0] == "plain: no role (declare it with opt(default, ROLE, help, ...))"


def test_the_derived_lists_hold_what_the_roles_say():
    assert {"phase", "fused_adam", "amp", "grad_compression", "dataroot", "seed"} <= set(RUN_KEYS)
    assert not set(RUN_KEYS) & PROCESS_KEYS
    assert set(GENERATOR_SHAPE_KEYS) < set(ARCHITECTURE_KEYS)
    assert not {"init_type", "init_gain"} & set(ARCHITECTURE_KEYS)  # they set weights, not shapes


def test_a_rerun_with_phase_val_is_refused_naming_phase(tmp_path):
    """``phase`` decides which folders a run trains on: continuing with --phase val trained on other data."""
    saved = from_dict({}).to_dict()
    with pytest.raises(ConfigError) as refused:
        rerun_run(from_dict({"phase": "val"}), str(tmp_path), saved, explicit=False)
    assert str(refused.value) == (f"name: the run at {tmp_path} exists with other options (phase: 'train' in the "
                                  f"run, 'val' now); give another --name, or --continue_train to continue it with "
                                  f"the options given now")


BASE = {"lambda_identity": 0.0}  # so that input_nc and output_nc may differ


@pytest.mark.parametrize("key", RUN_KEYS)
def test_a_rerun_with_an_option_it_must_keep_changed_is_refused_naming_it(tmp_path, key):
    saved = from_dict(BASE).to_dict()
    changed = from_dict({**BASE, key: other_values(key, getattr(from_dict(BASE), key))[0]})
    with pytest.raises(ConfigError, match=rf"exists with other options \({key}: [^;]* in the run, [^;]* now\)"):
        rerun_run(changed, str(tmp_path), saved, explicit=False)
    assert rerun_run(changed, str(tmp_path), saved, explicit=True)  # --continue_train: as asked


@pytest.mark.parametrize("key", [k for k in FIELDS if k not in RUN_KEYS])
def test_a_rerun_with_only_an_option_it_may_change_changed_continues(tmp_path, key):
    saved = from_dict(BASE).to_dict()
    changed = from_dict({**BASE, key: other_values(key, getattr(from_dict(BASE), key))[0]})
    assert rerun_run(changed, str(tmp_path), saved, explicit=False)


SMALL = dict(netG="resnet_6blocks", ngf=4, ndf=4, netD="n_layers", n_layers_D=2, crop_size=24, load_size=28,
             lambda_identity=0.0, device="cpu")


def shapes(values: dict) -> dict[str, dict]:
    """Each network's parameters and buffers by name, as shapes (None: the options are refused)."""
    try:
        model = CycleGAN(from_dict({**SMALL, **values}))
    except ConfigError:
        return {}
    found: dict[str, dict] = {"G": {}, "D": {}}
    for name, net in model.networks().items():  # G_A, G_B, D_A, D_B
        found[name[0]].update({f"{name}.{k}": tuple(v.shape) for k, v in net.state_dict().items()})
    return found


@pytest.mark.parametrize("key", RUN_KEYS)
def test_the_options_declared_to_shape_a_network_are_those_that_do(key):
    """Over every option a rerun keeps: another value changes the generators' shapes exactly when the
    option is declared to shape them (``shapes`` G), and the discriminators' when declared D."""
    before = shapes({})
    after = [s for s in (shapes({key: v}) for v in other_values(key, SMALL.get(key, FIELDS[key].default))) if s]
    assert after, f"{key}: no other valid value to try"
    for net in "GD":
        declared = net in FIELDS[key].metadata["shapes"]
        changed = any(s[net] != before[net] for s in after)
        assert changed == declared, f"{key} {'does not change' if declared else 'changes'} the {net} networks"
