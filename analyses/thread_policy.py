"""Idle against shared cores under four CPU thread policies: why the commands' waiting threads sleep soon.

``python -m analyses.thread_policy`` times one workload, ten forward + backward passes of the default
image encoder (EfficientNet-Lite0, random weights) on 16 images at 256 x 160, as Integrated Gradients
and the CAMs run it, in fresh processes: alone, two at once with the same policy, and beside a job
with torch's default policy (another user's analysis). Policies: torch's default (libgomp spins
300,000 times at every barrier before it sleeps), a short spin (``GOMP_SPINCOUNT=1000``, the commands'
choice on a busy machine, :mod:`models.cpu_sharing`), no spin (``OMP_WAIT_POLICY=PASSIVE``), one thread per process.
Writes ``REPORT_DIR/thread_policy.{md,csv,tex}``. A benchmark, not a test: its figures measure the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pandas as pd
import timm
import torch

from models.cli import parse_command, run_main
from models.cpu_sharing import SHORT_SPIN, SPIN_COUNT, WAIT_POLICY
from models.report_tables import write_table

THREADS = "OMP_NUM_THREADS"
POLICIES = {
    "torch default": {},
    "short spin (the commands' choice on a busy machine)": {SPIN_COUNT: SHORT_SPIN},
    "passive wait": {WAIT_POLICY: "PASSIVE"},
    "one thread per process": {THREADS: "1"},
}
DEFAULT_POLICY = "torch default"
# set by this process or the shell; each worker gets exactly its policy's
POLICY_VARIABLES = (WAIT_POLICY, THREADS, SPIN_COUNT)


@dataclass(frozen=True)
class ThreadPolicyConfig:
    passes: int = field(default=10, metadata={"help": "timed forward + backward passes per process"})
    batch: int = field(default=16, metadata={"help": "images per pass (256 x 160)"})
    repeats: int = field(default=1, metadata={"help": "each case this many times; the table keeps the fastest"})
    report_dir: str = field(default="reports/thread_policy", metadata={"help": "thread_policy.{md,csv,tex}"})


def workload(passes: int, batch: int) -> float:
    """Seconds for ``passes`` forward + backward passes of Lite0 on ``batch`` images (one untimed first)."""
    torch.manual_seed(0)
    network = timm.create_model("tf_efficientnet_lite0", pretrained=False, in_chans=1, num_classes=0)
    images = torch.randn(batch, 1, 256, 160, requires_grad=True)
    network(images).sum().backward()
    started = time.perf_counter()
    for _ in range(passes):
        network(images).sum().backward()
    return time.perf_counter() - started


def start_worker(policy: str, config: ThreadPolicyConfig) -> subprocess.Popen:
    """A fresh interpreter running :func:`workload` under ``policy`` (``python -c``, so the commands'
    own launch-time policy does not apply)."""
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES} | POLICIES[policy]
    code = f"from analyses.thread_policy import workload; print(workload({config.passes}, {config.batch}))"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


def seconds(worker: subprocess.Popen) -> float:
    out, _ = worker.communicate()
    if worker.returncode != 0:
        raise RuntimeError(f"thread-policy worker failed with status {worker.returncode}")
    return float(out.strip().splitlines()[-1])


def measure(policy: str, config: ThreadPolicyConfig) -> dict[str, float]:
    """Fastest of ``repeats`` for each case: alone, two at once (the mean of the pair), beside a
    torch-default job."""
    alone, pair, beside = [], [], []
    for _ in range(config.repeats):
        alone.append(seconds(start_worker(policy, config)))
        both = [start_worker(policy, config), start_worker(policy, config)]
        pair.append(sum(seconds(w) for w in both) / 2)
        ours, other = start_worker(policy, config), start_worker(DEFAULT_POLICY, config)
        beside.append(seconds(ours))
        seconds(other)
    return {"alone": min(alone), "two at once": min(pair), "beside a torch-default job": min(beside)}


def policy_table(config: ThreadPolicyConfig) -> pd.DataFrame:
    """One row per policy: seconds alone, two at once and beside a default job, and each against the
    fastest idle time (a fair share of two cores between two jobs is 2x)."""
    rows = {policy: measure(policy, config) for policy in POLICIES}
    fastest = min(row["alone"] for row in rows.values())
    return pd.DataFrame([{"policy": policy, **{f"{case} (s)": f"{value:.1f}" for case, value in row.items()},
                          **{f"{case} / fastest alone": f"{value / fastest:.2f}" for case, value in row.items()}}
                         for policy, row in rows.items()])


def main(argv: list[str] | None = None) -> int:
    config = parse_command(ThreadPolicyConfig, argv, "python -m analyses.thread_policy", __doc__.splitlines()[0])
    frame = policy_table(config)
    write_table(frame, f"{config.report_dir}/thread_policy",
                caption=(f"{config.passes} forward + backward passes of EfficientNet-Lite0 on {config.batch} images "
                         f"at 256 x 160, fresh processes, fastest of {config.repeats}; {os.cpu_count()} cores"),
                label="tab:thread-policy")
    print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    run_main(main)
