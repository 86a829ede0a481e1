"""The lock: every package in this environment is pinned there, and the pins meet pyproject's ranges."""
import platform
import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock-linux-x86_64-py311.txt"
LOCKED_PLATFORM = platform.system() == "Linux" and platform.machine() == "x86_64" and sys.version_info[:2] == (3, 11)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


@pytest.mark.skipif(not LOCKED_PLATFORM, reason="the lock is for Linux x86_64 with Python 3.11; "
                                                "elsewhere run.sh installs from pyproject.toml's ranges")
def test_every_installed_package_is_pinned_by_the_lock():
    pins = locked()
    # What pip installed into this environment (Ray puts its vendored copies of psutil and colorama on
    # sys.path once imported; they come with Ray's pinned wheel and are not pip's).
    site_packages = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=site_packages)}
    installed.pop("cyclegan")
    unpinned = sorted(name for name in installed if name not in pins)
    assert not unpinned, f"installed but not in {LOCK.name}: {unpinned} (regenerate with ./run.sh lock)"
    drifted = {name: (version, pins[name]) for name, version in installed.items() if version != pins[name]}
    assert not drifted, f"installed (version, locked version) differ: {drifted}"


def test_the_lock_meets_pyprojects_ranges():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for req in requirements:
        if canonical(req.name) == project["name"]:  # one extra taking in another (test includes export)
            assert req.extras <= set(project["optional-dependencies"]), req
            continue
        name = canonical(req.name)
        assert name in pins, f"{req.name} is a dependency but not in {LOCK.name}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK.name} pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"


def test_torch_is_floored_past_the_weights_only_bypass():
    """torch before 2.6 let a crafted file run code through torch.load(weights_only=True) (CVE-2025-32434),
    the guard every weights file here is read with: no such torch (nor its torchvision) meets the ranges."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {canonical(r.name): r.specifier for r in map(Requirement, project["dependencies"])}
    for name, unsafe, first_safe in (("torch", "2.5.1", "2.6.0"), ("torchvision", "0.20.1", "0.21.0")):
        assert not ranges[name].contains(unsafe), f"{name}{ranges[name]} admits {unsafe}"
        assert ranges[name].contains(first_safe), f"{name}{ranges[name]} refuses {first_safe}"
