"""How a command of this project shares CPU cores with other jobs.

torch's CPU kernels run on OpenMP (GNU libgomp in the Linux wheels), whose threads spin at every
barrier before they sleep. Two such processes on the same cores spin while the other's threads wait
to be scheduled: ten forward + backward passes of the default encoder took 3.4x their idle time each
with two jobs on two cores, against the 2x of a fair share (``docs/measurements.md``, "Sharing the
cores"; ``python -m analyses.thread_policy``). With ``OMP_WAIT_POLICY=PASSIVE`` waiting threads sleep
at once and the two jobs share fairly. libgomp reads the variable once, when torch loads it, so it
is set before torch is imported, and only in a process started as one of this project's commands
(``python -m models.X``, ``mammo_interp.X``, ``analyses.X``): importing the packages from your own
program changes nothing, and a value you set yourself is kept.
"""

from __future__ import annotations

import os
import sys

COMMAND_PACKAGES = ("models", "mammo_interp", "analyses")
WAIT_POLICY = "OMP_WAIT_POLICY"


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


def share_cores_fairly() -> None:
    """Let OpenMP's waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``) in a command's own process,
    unless the user chose a policy or torch is already loaded (too late to matter)."""
    if "torch" not in sys.modules and started_as_command(list(getattr(sys, "orig_argv", []))):
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")
