"""The compute threads of a job: one number for torch, OpenMP, BLAS and the native kernels
(a record of the job's resources, kept with its log; the engine uses it too).

A pipeline job is given a number of cores by its rule's ``threads`` (Snakemake, SLURM
``cpus-per-task``); numerical libraries otherwise size their pools from the machine's core
count, which on a shared node means more threads than cores and, with spinning waiters, a
run many times slower.  :func:`limit_threads` sets every pool from that one number:

* the environment variables read by OpenMP runtimes and BLAS libraries loaded later, and by
  child processes (:data:`ENV_VARS`);
* the pools of libraries already loaded (OpenBLAS, MKL, BLIS, OpenMP runtimes), through
  ``threadpoolctl``;
* torch's intra-op pool, when torch is imported (the native kernels take their thread count
  from it).
"""

from __future__ import annotations

import numbers
import os
import sys

#: Environment variables naming a thread count, for libraries loaded after the call.
ENV_VARS = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)


#: The most threads a job may ask for: the native kernels' team holds at most this many,
#: and OpenMP runtimes end the whole process when they cannot start a thread asked for.
MAX_THREADS = 256


def limit_threads(n: int) -> int:
    """Make every thread pool of this process (and of its children) use ``n`` threads;
    returns n.  ``n`` must be a whole number from 1 to :data:`MAX_THREADS`."""
    if (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
            or n > MAX_THREADS):
        raise ValueError(f"threads must be a whole number from 1 to {MAX_THREADS}, "
                         f"got {n!r}")
    n = int(n)
    for var in ENV_VARS:
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
