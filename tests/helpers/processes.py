"""Processes in tests: waiting for a condition (polled, never a fixed sleep), ports free a moment ago and
who listens on them, processes found by their command line and stopped, and a CLI driver killed mid-run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


# ---------------------------------------------------------------- ports
def free_port() -> int:
    """A port that was free a moment ago: another process may take it before ours binds, so whoever
    starts a server on it must retry with another (see ``helpers.ray_nodes.start_ray_node``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on 127.0.0.1:``port`` (or on all addresses), from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, state, inode = fields[1], fields[3], fields[9]
        host, port_hex = address.split(":")
        if state == "0A" and int(port_hex, 16) == port and host in ("0100007F", "00000000"):
            found.add(inode)
    return found


def owns_port(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on ``port`` (not some other process)."""
    inodes = listening_inodes(port)
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


# ---------------------------------------------------------------- processes
def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def stop_processes_mentioning(text: str) -> None:
    """SIGTERM, then SIGKILL, every process whose command line holds ``text`` (a temp folder of ours)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_mentioning(text)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if pids:
            try:
                wait_for(lambda: not processes_mentioning(text), 10, f"processes of {text} to end")
            except TimeoutError:
                pass


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def kill_driver_when(args: list[str], ready, timeout: float, what: str, log_path=None) -> None:
    """Run ``python -m cyclegan.cli ARGS`` as a driver joined to a running Ray, SIGKILL it once ``ready()``
    holds, and reap it (killed as well if waiting failed)."""
    env = dict(os.environ, RAY_AUTH_MODE="token")  # the CLI joins a token-protected cluster
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        driver = subprocess.Popen([sys.executable, "-m", "cyclegan.cli", *args], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            wait_for(ready, timeout, what)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
    finally:
        if log_path:
            log.close()
