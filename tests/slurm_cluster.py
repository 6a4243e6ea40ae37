"""A throwaway single-node SLURM cluster on 127.0.0.1 for end-to-end tests.

Everything lives in one temporary folder: a fresh munge key with its own ``munged`` and
socket, a ``slurm.conf`` without accounting (no slurmdbd), the controller's state and the
node's spool.  ``slurmctld`` and ``slurmd`` use two unused TCP ports, so the cluster
neither needs nor touches a system-wide SLURM or munge.  All three daemons run in the
foreground as children of the test process and are stopped by their PIDs.

Clients (``sbatch``, ``squeue``, ``snakemake --executor slurm``) find the cluster through
``SLURM_CONF``; :meth:`SlurmCluster.env` returns an environment with it set.

Only root can run ``slurmd`` (it switches to the job owner's uid), so
:func:`unavailable_reason` says why a cluster cannot be started here (not root, missing
binaries) and tests skip with that reason.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "slurmstepd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "srun", "scancel")
PARTITION = "debug"
NODE = "localhost"


def _which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin folders (not always on PATH)."""
    extra = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def unavailable_reason() -> str | None:
    """Why a private SLURM cannot be started on this machine, or ``None`` if it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "starting slurmd needs root (it runs jobs as their owner); not root here"
    missing = [b for b in DAEMONS + CLIENTS if _which(b) is None]
    if missing:
        return (
            f"SLURM/munge binaries missing: {', '.join(missing)} "
            "(Debian: apt-get install munge slurm-wlm)"
        )
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) of this machine as ``slurmd -C`` reports them."""
    out = subprocess.run(
        [_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    cpus = re.search(r"\bCPUs=(\d+)", out)
    mem = re.search(r"\bRealMemory=(\d+)", out)
    n_cpu = int(cpus.group(1)) if cpus else (os.cpu_count() or 1)
    if mem:
        mem_mb = int(mem.group(1))
    else:
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return n_cpu, mem_mb


def slurm_conf(root: Path, cpus: int, mem_mb: int, ctld_port: int, slurmd_port: int) -> str:
    """The text of a single-node ``slurm.conf`` without accounting, all paths under root."""
    state, spool, logs = root / "state", root / "spool", root / "log"
    return "\n".join(
        [
            f"ClusterName=mfsym{ctld_port}",
            f"SlurmctldHost={NODE}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
            f"StateSaveLocation={state}",
            f"SlurmdSpoolDir={spool}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={logs / 'slurmctld.log'}",
            f"SlurmdLogFile={logs / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            # finished jobs stay visible to squeue (the status command without sacct)
            "MinJobAge=3600",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            "Waittime=0",
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def write_srun_wrapper(folder: Path, conf: Path) -> Path:
    """An ``srun`` that always finds this cluster's configuration.

    Inside a job, the Snakemake jobstep executor starts the rule with ``srun`` after
    removing every ``SLURM_*`` variable (``SLURM_CONF`` included) from its environment; a
    real cluster's clients then read ``/etc/slurm/slurm.conf``.  A private cluster must not
    write there, so the jobs' PATH starts with this wrapper, which restores ``SLURM_CONF``.
    """
    folder.mkdir(mode=0o755, exist_ok=True)
    wrapper = folder / "srun"
    wrapper.write_text(
        f"#!/bin/sh\nSLURM_CONF={conf}\nexport SLURM_CONF\nexec {_which('srun')} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return wrapper


class ClusterStartError(RuntimeError):
    """A daemon did not come up; the message holds the tail of its log."""


@dataclass
class SlurmCluster:
    """A running private cluster; :meth:`stop` ends every daemon it started, by PID."""

    root: Path
    conf: Path
    cpus: int
    mem_mb: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # -- environment and clients -----------------------------------------------------------
    def env(self, base: dict | None = None) -> dict:
        """A process environment whose SLURM clients talk to this cluster."""
        env = dict(os.environ if base is None else base)
        for key in list(env):
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_")):
                del env[key]
        env["SLURM_CONF"] = str(self.conf)
        sbin = os.pathsep.join(["/usr/sbin", "/sbin"])
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", ""), sbin])
        return env

    def client(self, *args: str, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster and return its stdout."""
        res = subprocess.run(
            list(args), env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res.stdout

    def jobs(self) -> list[dict]:
        """Every job the controller knows (running or finished within MinJobAge)."""
        out = self.client(
            "squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%N|%k|%M|%C|%m"
        )
        keys = ("job_id", "name", "state", "nodes", "comment", "time", "cpus", "memory")
        return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines()]

    def log(self, daemon: str, tail: int = 40) -> str:
        path = self.root / "log" / f"{daemon}.log"
        if not path.exists():
            return f"({path.name} was not written)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-tail:])

    # -- lifecycle -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 (kept by Popen)
        try:
            self.procs[name] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                start_new_session=True,
            )
        finally:
            out.close()

    def _wait_for(self, what: str, ok, daemon: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(daemon)
            if proc is not None and proc.poll() is not None:
                break
            try:
                if ok():
                    return
            except (OSError, RuntimeError, subprocess.SubprocessError):
                pass
            time.sleep(0.25)
        out = self.root / "log" / f"{daemon}.out"
        console = out.read_text(errors="replace")[-2000:] if out.exists() else ""
        raise ClusterStartError(
            f"{what} did not happen within {timeout:.0f} s; {daemon} log:\n"
            f"{self.log(daemon)}\n{console}"
        )

    def start(self, timeout: float = 60) -> SlurmCluster:
        munge_dir = self.root / "munge"
        key = self.root / "munge.key"
        made = subprocess.run(
            [_which("mungekey"), "--create", f"--keyfile={key}"], capture_output=True,
            text=True, timeout=30, check=False,
        )
        if made.returncode != 0:
            raise ClusterStartError(f"mungekey could not create a key: {made.stderr}")
        sock = munge_dir / "munge.socket"
        self._spawn(
            "munged",
            [
                _which("munged"), "--foreground", "--force", f"--socket={sock}",
                f"--key-file={key}", f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--seed-file={self.root / 'munged.seed'}",
            ],
        )
        self._wait_for("munge socket creation", sock.exists, "munged", timeout)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for(
            "slurmctld answering", lambda: "UP" in self.client("scontrol", "ping", timeout=10),
            "slurmctld", timeout,
        )
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait_for("node becoming idle", self._node_idle, "slurmd", timeout)
        return self

    def _node_idle(self) -> bool:
        state = self.client("sinfo", "--noheader", "--Node", "--format=%T").split()
        return bool(state) and state[0].rstrip("*~#") in ("idle", "mixed", "allocated")

    def cancel_all(self, timeout: float = 60) -> None:
        """Cancel this cluster's jobs and wait until none is running any more."""
        try:
            self.client("scancel", "--user", "root", timeout=20)
        except (RuntimeError, subprocess.SubprocessError, OSError):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                live = [
                    j for j in self.jobs()
                    if j["state"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
                ]
            except (RuntimeError, subprocess.SubprocessError, OSError):
                return
            if not live:
                return
            time.sleep(0.5)

    def stop(self) -> list[str]:
        """Stop the daemons this object started (slurmd, slurmctld, munged), by PID.

        Returns a line per daemon saying how it ended; never raises.
        """
        if self.procs.get("slurmctld") is not None and self.procs["slurmctld"].poll() is None:
            self.cancel_all()
        report = []
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            report.append(f"{name} (pid {proc.pid}) exited with {proc.returncode}")
        return report


def start_cluster(base_dir: str | None = None, timeout: float = 60) -> SlurmCluster:
    """Create the folder, key and ``slurm.conf`` of a fresh cluster and start its daemons.

    On failure every daemon already started is stopped before the error propagates.
    """
    reason = unavailable_reason()
    if reason:
        raise ClusterStartError(reason)
    # munged insists that every folder above its socket is world-executable, and the
    # socket path must stay short (108 bytes), so the cluster lives in a short /tmp folder
    root = Path(tempfile.mkdtemp(prefix="mfsym-slurm-", dir=base_dir or "/tmp"))
    root.chmod(0o755)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(mode=0o755)
    (root / "munge").mkdir(mode=0o755)
    cpus, mem_mb = node_hardware()
    ctld_port = free_port()
    slurmd_port = free_port()
    while slurmd_port == ctld_port:
        slurmd_port = free_port()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, cpus, mem_mb, ctld_port, slurmd_port))
    write_srun_wrapper(root / "bin", conf)
    cluster = SlurmCluster(root=root, conf=conf, cpus=cpus, mem_mb=mem_mb)
    try:
        return cluster.start(timeout)
    except BaseException:
        cluster.stop()
        raise
