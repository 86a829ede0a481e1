"""The launcher files' node commands executed as `ray up` runs them: a head and a worker, each a stand-in
machine (its own PID and mount namespaces, one shared network namespace: tests/helpers/namespaces.py),
every command wrapped by Ray's own command runner (tests/helpers/launcher.py), all of it twice (a rerun
of `ray up` on live nodes). The files' text is checked in test_cluster.py; here the commands run."""
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import namespaces, ray_autoscaler
from tests.helpers.launcher import node_runner, prepare_machine, run_node_commands
from tests.helpers.processes import wait_for

ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "cluster"
FILES = ("aws-spot.yaml", "gcp-spot.yaml")
HEAD_IP = "127.0.0.1"
WATCHER = "cluster\0watch-preemption"  # the watcher's own argv, not a shell line that names it

WHY_NOT = namespaces.available()
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "-")

# What the head's commands cannot do here, and the stand-in: the head and the worker share one loopback,
# so the head's object manager and dashboard agent take other ports than the worker's (its commands run
# as written).
HEAD_PORTS = ("--object-manager-port=8076", "--object-manager-port=8077 --dashboard-agent-listen-port=52366")

ALIVE_NODES = """
import json, sys, time
from ray.util.state import list_nodes
deadline = time.time() + 60
while True:
    nodes = [n for n in list_nodes(address="http://127.0.0.1:8265", detail=True, raise_on_missing_output=False)
             if n.state == "ALIVE"]
    if len(nodes) >= int(sys.argv[1]) or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([n.resources_total for n in nodes]))
"""


def session_env() -> dict:
    """What every command's session gets besides a login's own variables: the test run's Ray token, and
    pip pointed at nothing, as a dry run (setup_commands resolve the lock against this interpreter's
    packages; nothing is downloaded, nothing in the shared virtual environment changes)."""
    import os
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.environ["RAY_AUTH_TOKEN"],
            "PIP_NO_INDEX": "1", "PIP_DRY_RUN": "1"}


def copy_project(home: Path) -> None:
    """~/cyclegan as `ray up`'s file_mounts leave it: the project's files (no .venv, no .git)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (home / "cyclegan" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, home / "cyclegan" / name)


def write_bootstrap_config(config: dict, home: Path) -> None:
    """~/ray_bootstrap_config.yaml, which the head's `--autoscaling-config` names, as `ray up` writes it
    (Ray's own function) but for Ray's read-only provider: the autoscaler runs, with the project's scorer
    and this file's node types, and cannot reach a cloud."""
    with ray_autoscaler.head_bootstrap_config(config) as written:
        shutil.copy(written.name, home / "ray_bootstrap_config.yaml")


def start_node(config: dict, shell, kind: str) -> list:
    """One node's start commands, with the environment `NodeUpdater` gives a cloud node's (its node type's
    resources); a worker's also get the head's address (RAY_HEAD_IP), as the autoscaler runs them."""
    if kind == "head":
        start = config["head_start_ray_commands"]
        assert any(HEAD_PORTS[0] in c for c in start), start
        start, node_type = [c.replace(*HEAD_PORTS) for c in start], config["head_node_type"]
    else:
        start, node_type = ray_autoscaler.with_head_ip(config["worker_start_ray_commands"], HEAD_IP), "gpu_spot"
    env = ray_autoscaler.node_start_environment(config["available_node_types"][node_type]["resources"])
    return run_node_commands(node_runner(config, shell, kind), shell, start, env)


def alive_nodes(machine, shell, at_least: int) -> list[dict]:
    """The cluster's live nodes' resources, once ``at_least`` are alive (or after a minute)."""
    done = subprocess.run(machine.command([sys.executable, "-c", ALIVE_NODES, str(at_least)]), env=shell.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def assert_all_exit_0(results: list, where: str) -> None:
    print(*(f"{where} {r.seconds:5.1f} s  {r.command}" for r in results), sep="\n")  # the costs, with -s
    failed = [r for r in results if r.returncode != 0]
    if failed:
        code = failed[0].returncode  # a signal's death is -N here, 128+N as a shell (and ssh) reports it
        how = f"was killed by {signal.Signals(-code).name} (exit {128 - code})" if code < 0 else f"exited {code}"
        pytest.fail(f"{where}: {failed[0].command!r} {how}:\n{failed[0].output}")


def launcher_configs() -> list[dict]:
    """Both files, as Ray prepares them. Their setup and head commands are the same and their worker
    commands differ only in the watcher's flags, so one rerun covers both: the AWS file's commands on
    fresh machines, then the GCP file's on the same live machines."""
    configs = [ray_autoscaler.prepared(yaml.safe_load((CLUSTER / name).read_text())) for name in FILES]
    for key in ("setup_commands", "head_start_ray_commands"):
        assert configs[0][key] == configs[1][key], f"{key} differ: run each file twice"
    first, second = (c["worker_start_ray_commands"] for c in configs)
    assert [c.split(" --provider")[0] for c in first] == [c.split(" --provider")[0] for c in second]
    return configs



@pytest.mark.slow  # two Ray nodes, started twice
def test_every_node_command_exits_0_and_the_worker_joins_again_after_a_rerun(tmp_path):
    """Every setup and start command of the head and the worker exits 0 through Ray's runner, twice; the
    worker joins the head both times, and the rerun leaves exactly one preemption watcher, a new one.
    The worker's `pkill -f "cyclegan cluster watch-preemption"` matched the shell running it (Ray's
    `bash --login -c -i '... (pkill ...)'` names the pattern): it SIGKILLed its own shell, the command
    exited 137 and Ray stopped the worker's update before `ray start`. Not run: the head_setup_commands
    Ray adds from its provider's defaults (a pip install of its cloud client, which Ray's image holds;
    not the file's, and not installable offline)."""
    head = namespaces.start_machine(tmp_path / "head")
    worker = namespaces.start_machine(tmp_path / "worker", network_of=head)
    try:
        shells = {m: prepare_machine(m, session_env()) for m in (head, worker)}
        for machine in (head, worker):
            copy_project(machine.root / "home")
        watchers: list[int] = []
        for name, config in zip(FILES, launcher_configs()):
            # setup_commands: one list for every node of one image; run on one machine to save time
            assert_all_exit_0(run_node_commands(node_runner(config, shells[head], "head"), shells[head],
                                                config["setup_commands"], {}), f"{name} setup")
            write_bootstrap_config(config, head.root / "home")
            assert_all_exit_0(start_node(config, shells[head], "head"), f"{name} head")
            assert_all_exit_0(start_node(config, shells[worker], "worker"), f"{name} worker")
            nodes = alive_nodes(head, shells[head], 2)
            spot = config["available_node_types"]["gpu_spot"]["resources"]  # what the worker was given
            assert len(nodes) == 2 and any({k: n.get(k) for k in spot} == spot for n in nodes), (name, nodes)
            wait_for(lambda: len(worker.pids_mentioning(WATCHER)) == 1, 30, "one preemption watcher")
            now = worker.pids_mentioning(WATCHER)
            assert not set(now) & set(watchers), (name, "the old watcher still runs", now, watchers)
            watchers = now
        log = (worker.root / "cyclegan-preemption.log").read_text()
        assert watchers == worker.pids_mentioning(WATCHER), log  # it keeps watching
    finally:
        worker.close()
        head.close()
