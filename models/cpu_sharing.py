"""How a command of this project shares CPU cores with other jobs.

torch's CPU kernels run on OpenMP (GNU libgomp in the Linux wheels), whose threads spin 300,000 times
at every barrier before they sleep. Two such processes on the same cores spin while the other's threads
wait to be scheduled, and each runs about 4x slower than alone, where a fair share of two cores is 2x.
A short spin (``GOMP_SPINCOUNT=1000``) shares the cores fairly but costs 12-30 % of the idle speed
(``python -m analyses.thread_policy``; figures in ``docs/measurements.md``, "Sharing the cores"). So a
command that starts on a busy machine (at least half the cores busy over a quarter second, read from
``/proc/stat``; elsewhere the 1-minute load average) spins briefly, and one that starts on an idle
machine keeps torch's default. libgomp reads the variable once, when
torch loads it, so it is set before torch is imported, and only in a process started as one of this
project's commands (``python -m models.X``, ``mammo_interp.X``, ``analyses.X``): importing the packages
from your own program changes nothing, and a wait policy or spin count you set yourself is kept.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

COMMAND_PACKAGES = ("models", "mammo_interp", "analyses")
WAIT_POLICY = "OMP_WAIT_POLICY"
SPIN_COUNT = "GOMP_SPINCOUNT"
SHORT_SPIN = "1000"


def started_as_command(argv: list[str]) -> bool:
    """Whether ``argv`` (the interpreter's own command line) runs ``python -m`` one of this project's
    modules: the first argument that is not an interpreter option must be ``-m`` (not ``-c`` or a script)."""
    arguments = iter(argv[1:])
    for argument in arguments:
        if argument in ("-X", "-W"):  # interpreter options that take a value
            next(arguments, None)
        elif argument == "-m":
            module = next(arguments, "")
            return module.split(".")[0] in COMMAND_PACKAGES
        elif argument == "-c" or not argument.startswith("-"):
            return False
    return False


def machine_is_busy(load: float, cores: int) -> bool:
    """Whether other work keeps at least half of the ``cores`` busy (``load``: busy cores, e.g. a load average)."""
    return load >= 0.5 * cores


def busy_cores(seconds: float = 0.25) -> float:
    """How many cores were busy over the next ``seconds`` (``/proc/stat``), else the 1-minute load
    average (a lagging measure, where ``/proc`` is missing), else 0."""
    stat = Path("/proc/stat")
    if stat.is_file():
        def times() -> list[int]:
            return [int(value) for value in stat.read_text().splitlines()[0].split()[1:]]
        before = times()
        time.sleep(seconds)
        spent = [after - start for after, start in zip(times(), before)]
        total = sum(spent)
        idle = spent[3] + spent[4]  # idle, iowait
        return (os.cpu_count() or 1) * (total - idle) / total if total else 0.0
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def share_cores_fairly() -> None:
    """On a busy machine, make OpenMP's waiting threads sleep after a short spin (``GOMP_SPINCOUNT=1000``)
    in a command's own process, unless the user chose a wait policy or spin count, or torch is already
    loaded (too late)."""
    if ("torch" not in sys.modules and started_as_command(list(getattr(sys, "orig_argv", [])))
            and WAIT_POLICY not in os.environ and SPIN_COUNT not in os.environ
            and machine_is_busy(busy_cores(), os.cpu_count() or 1)):
        os.environ[SPIN_COUNT] = SHORT_SPIN
