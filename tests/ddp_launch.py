"""Start ``python -m genlab`` as the tasks of one simulated ``srun`` step: one gloo DDP rank per process on the CPU.

Each process gets the variables srun sets (SLURM_PROCID, SLURM_NTASKS, SLURM_JOB_ID, SLURM_STEP_ID, ...), so
Lightning reads its rank from them and starts no processes itself, as on a cluster; a free local port stands in for
the job's master address.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SLURM_JOB_ID, SLURM_STEP_ID = "4242", "0"


@dataclass
class Task:
    rank: int
    returncode: int
    output: str


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def srun(args: list[str], tasks: int = 2, timeout: float = 600) -> list[Task]:
    """Run ``python -m genlab ARGS`` as ``tasks`` srun tasks on this machine; return each task's exit code and output."""
    port = free_port()
    procs = []
    for rank in range(tasks):
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        env.update({
            "SLURM_JOB_ID": SLURM_JOB_ID, "SLURM_STEP_ID": SLURM_STEP_ID, "SLURM_JOB_NAME": "genlab-test",
            "SLURM_NTASKS": str(tasks), "SLURM_NTASKS_PER_NODE": str(tasks), "SLURM_NNODES": "1",
            "SLURM_NODEID": "0", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
            "SLURM_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
        })
        procs.append(subprocess.Popen([sys.executable, "-m", "genlab", *args], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    try:
        for rank, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=timeout)
            results.append(Task(rank, proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results
