"""A cluster launcher file's node commands run as ``ray up`` runs them, on a stand-in machine
(``helpers.namespaces``): Ray's own command runner (the one its node provider picks: Docker over SSH for
the shipped files) wraps every command (``with_head_node_ip``, the environment exports, ``~`` expansion,
``bash --login -c -i``, ``docker exec``), and hands the final command line to ``RemoteShell``, which
stands in for what cannot run here: ``ssh`` (the remote login shell gets the command words joined by
spaces, as sshd's ``$SHELL -c`` does) and ``docker exec`` into the container (the machine is the
container: a ``docker`` on its PATH that runs the command in place)."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .namespaces import Machine

HOME = "/tmp/home"  # inside the machine (its /tmp is its own folder)
SSH_TARGET_IP = "127.0.0.1"

FAKE_DOCKER = """#!/bin/sh
# `docker exec [-it] [-e VAR=$VAR ...] CONTAINER COMMAND...`: this machine is the container.
[ "$1" = exec ] || { echo "docker $1: not on this stand-in machine" >&2; exit 2; }
shift
while [ $# -gt 0 ]; do case "$1" in -e) shift 2;; -*) shift;; *) break;; esac; done
shift
exec "$@"
"""


@dataclass
class Result:
    command: str  # the launcher file's command
    returncode: int
    output: str
    seconds: float


@dataclass
class RemoteShell:
    """The ``process_runner`` Ray's SSH runner calls: the remote part of its ``ssh`` command line, run by a
    login user's shell on the machine, with a fresh session environment (sshd passes none of ours)."""
    machine: Machine
    env: dict
    timeout: float = 120
    results: list = field(default_factory=list)
    DEVNULL = subprocess.DEVNULL

    def _remote(self, cmd: list[str]) -> subprocess.CompletedProcess:
        words = cmd[cmd.index(f"{self.env['USER']}@{SSH_TARGET_IP}") + 1:]
        # Output through pipes, read to their end: a background job that keeps them open hangs here as it
        # would keep the runner's ssh session open.
        return subprocess.run(self.machine.command(["bash", "-c", " ".join(words)]), env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=self.timeout)

    def check_call(self, cmd, **_ignored) -> int:
        done = self._remote(cmd)
        self.results.append(done)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr)
        return 0

    def check_output(self, cmd, **_ignored) -> bytes:
        done = self._remote(cmd)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr)
        return done.stdout.encode()


def prepare_machine(machine: Machine, extra_env: dict) -> RemoteShell:
    """The machine's login user's home (a ``~/.bashrc`` that puts this interpreter's bin folder and the
    stand-in ``docker`` first on PATH, as the node image's own does for its Python) and a session."""
    outside = machine.root / "home"
    (outside / "bin").mkdir(parents=True, exist_ok=True)
    (outside / "bin" / "docker").write_text(FAKE_DOCKER)
    (outside / "bin" / "docker").chmod(0o755)
    (outside / ".bashrc").write_text(f'export PATH="{Path(sys.executable).parent}:{HOME}/bin:$PATH"\n')
    env = {"HOME": HOME, "USER": "ubuntu", "LOGNAME": "ubuntu", "SHELL": "/bin/bash", "PATH": "/usr/bin:/bin",
           "LANG": "C.UTF-8", "TMPDIR": "/tmp", **extra_env}
    return RemoteShell(machine, env)


def node_runner(config: dict, shell: RemoteShell, node: str):
    """Ray's command runner for one node of a prepared launcher ``config``, as its node provider makes it
    for ``NodeUpdater`` (the file's ``docker`` section: ``DockerCommandRunner`` over SSH)."""
    from ray.autoscaler.node_provider import NodeProvider
    provider = NodeProvider(config["provider"], config["cluster_name"])
    runner = provider.get_command_runner(f"[{node}] ", node, dict(config["auth"], ssh_user=shell.env["USER"]),
                                         config["cluster_name"], shell, True, config.get("docker"))
    ssh = getattr(runner, "ssh_command_runner", runner)
    ssh.ssh_ip = SSH_TARGET_IP  # the provider's lookup of the node's address
    ssh.ssh_control_path = None  # Ray would make /tmp/ray_ssh_* for the ssh multiplexing socket
    return runner


def run_node_commands(runner, shell: RemoteShell, commands: list[str], env_vars: dict) -> list[Result]:
    """Each command as ``NodeUpdater.do_update`` runs it (``run_env="auto"``), until one fails (Ray stops
    the node's update there)."""
    import click
    results = []
    for command in commands:
        before, start = len(shell.results), time.monotonic()
        try:
            runner.run(command, environment_variables=env_vars, run_env="auto")
        except (click.ClickException, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            done = shell.results[-1] if len(shell.results) > before else None
            output = (done.stdout + done.stderr) if done else str(e)
            results.append(Result(command, done.returncode if done else -1, output[-3000:], time.monotonic() - start))
            break
        done = shell.results[-1]
        results.append(Result(command, 0, (done.stdout + done.stderr)[-3000:], time.monotonic() - start))
    return results
