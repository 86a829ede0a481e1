"""A stand-in machine for tests that run a cluster file's commands (``ray stop``, ``pkill``, fixed ports):
its own PID, mount and network namespaces (``unshare``, root only), so those commands reach nothing of the
test run's or anyone else's; its own ``/tmp`` (a folder of the test, bind-mounted there) and loopback.
Machines may share one network namespace, so their nodes talk over 127.0.0.1 as cluster nodes talk over
their network. The caller owns the machine and ends it with ``close`` (its init's end ends every process
in it)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .processes import wait_for

# The namespace's PID 1: loopback up, the machine's /tmp, then reap every orphan (Ray's daemons and a
# `nohup ... &` job end up its children) so that no zombie looks alive to `ray stop` or to a test.
INIT = """
import os, signal, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["mount", "--bind", sys.argv[1], "/tmp"], check=True)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
open("/tmp/.ready", "w").close()  # /tmp is now the machine's folder
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    signal.sigwait([signal.SIGCHLD])
"""


def available() -> str:
    """Why machines cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "namespaces need root"
    missing = [tool for tool in ("unshare", "nsenter", "ip", "mount") if not shutil.which(tool)]
    return f"missing {', '.join(missing)}" if missing else ""


@dataclass(eq=False)  # one machine is one machine (and a dict key)
class Machine:
    root: Path  # the machine's /tmp, seen from outside
    proc: subprocess.Popen  # `unshare`, the parent of the namespace's init
    init: int  # the init's pid outside the namespace

    def command(self, args: list[str]) -> list[str]:
        """``args`` run inside the machine (its PIDs, its /tmp and /proc, its network)."""
        return ["nsenter", "--target", str(self.init), "--pid", "--mount", "--net", "--", *args]

    def pids_mentioning(self, text: str) -> list[int]:
        """Processes of this machine (pids outside it) whose command line holds ``text``."""
        own = os.readlink(f"/proc/{self.init}/ns/pid")
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == own and \
                        text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass  # gone meanwhile
        return found

    def close(self) -> None:
        """SIGKILL the init: the kernel then kills every process of the namespace."""
        try:
            os.kill(self.init, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def start_machine(root: Path, network_of: Optional[Machine] = None) -> Machine:
    """A machine whose /tmp is ``root``, in its own network namespace or in ``network_of``'s."""
    root.mkdir(parents=True, exist_ok=True)
    # --kill-child: the init (and so the namespace) ends with `unshare`, which ends with this process.
    command = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *([] if network_of else ["--net"]),
               sys.executable, "-c", INIT, str(root)]
    if network_of:
        command = ["nsenter", f"--net=/proc/{network_of.init}/ns/net", "--", *command]  # execs unshare
    log = open(root.parent / f"{root.name}-init.log", "w")
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)
    log.close()
    try:
        wait_for(lambda: (root / ".ready").exists() or proc.poll() is not None, 30, "the namespace's init")
        if proc.poll() is not None:
            raise RuntimeError(f"unshare failed: {(root.parent / f'{root.name}-init.log').read_text()[-2000:]}")
        return Machine(root=root, proc=proc, init=_only_child(proc.pid))
    except BaseException:
        proc.kill()
        proc.wait(timeout=30)
        raise


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process ends, even killed (no machine outlives it)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _only_child(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, (pid, children)
    return int(children[0])
