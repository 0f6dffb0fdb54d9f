"""Scale across processes, through the real command: torchrun with two ranks and two localhost "nodes",
shards and merge, kill -9 and SIGTERM at random points then --resume, checkpoint errors, a failing rank."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from scale_fixtures import synthetic_structures, tiny_bert
from test_scale import assert_same_heads

N_PROTEINS = 240
# Small batches and a checkpoint after each, so that a kill at a random moment lands anywhere in the run.
RUN_OPTIONS = ["--properties", "default,contact_ranges", "--n-bootstrap", "20", "--max-tokens", "200"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("scale")
    model = tiny_bert(root / "model")
    data = synthetic_structures(root / "data", N_PROTEINS, seed=1)
    return {"model": str(model), "data": f"{data}::dssp=false"}


def analyze_args(inputs: dict[str, str], out: Path, *extra: str) -> list[str]:
    return ["analyze", "--model", inputs["model"], "--data", inputs["data"], "--out", str(out), *RUN_OPTIONS, *extra]


def plmlens(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plmlens", *args], capture_output=True, text=True,
                          env=environment(), timeout=timeout)  # fmt: skip


def torchrun(*args: str, launcher: tuple[str, ...] = ("--nproc-per-node=2",)) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "plmlens", *args]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = plmlens(*analyze_args(inputs, out))
    assert done.returncode == 0, done.stderr
    return out


def assert_same_run(expected: Path, actual: Path) -> None:
    assert_same_heads(pd.read_csv(expected / "heads.csv"), pd.read_csv(actual / "heads.csv"))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (expected, actual))
    for key in ("n_proteins", "n_residues", "n_skipped", "backgrounds", "fingerprint"):
        assert a[key] == b[key], key
    assert not list(actual.glob("checkpoint*.npz"))


def test_reference_run(reference):
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["n_proteins"] == N_PROTEINS and summary["n_skipped"] == 1 and summary["n_batches"] > 30
    assert 0.9 < summary["padding_efficiency"] <= 1.0 and summary["world_size"] == 1


def test_torchrun_two_processes_equal_one(inputs, reference, tmp_path):
    out = tmp_path / "run"
    port = free_port()
    done = subprocess.run(
        torchrun(*analyze_args(inputs, out), launcher=("--nproc-per-node=2", f"--master-port={port}")),
        capture_output=True, text=True, env=environment(), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(reference, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["n_batches"] > 30


def test_two_nodes_on_localhost_equal_one_process(inputs, reference, tmp_path):
    out = tmp_path / "run"
    launcher = ("--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                "--rdzv-id=plmlens-test")  # fmt: skip
    command = torchrun(*analyze_args(inputs, out), launcher=launcher)
    nodes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-3000:]
    assert_same_run(reference, out)
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2


def test_shards_and_merge_equal_one_run(inputs, reference, tmp_path):
    parts = []
    for index in range(2):
        parts.append(tmp_path / f"part{index}")
        done = plmlens(*analyze_args(inputs, parts[-1], "--shard", f"{index}/2"))
        assert done.returncode == 0, done.stderr
        assert (parts[-1] / "shard.json").exists() and not (parts[-1] / "heads.csv").exists()
    done = plmlens("merge", *map(str, parts), "--out", str(tmp_path / "merged"))
    assert done.returncode == 0, done.stderr
    assert_same_run(reference, tmp_path / "merged")
    alone = plmlens("merge", str(parts[0]), "--out", str(tmp_path / "bad"))
    assert alone.returncode == 2 and "shards 1/2 are missing" in alone.stderr
    assert len(alone.stderr.strip().splitlines()) == 1 and "Traceback" not in alone.stderr


def checkpoints(directory: Path) -> dict[Path, int]:
    """Checkpoint files and their inodes (each atomic write makes a new one)."""
    found = {}
    for path in directory.glob("checkpoint*.npz") if directory.exists() else ():
        try:
            found[path] = path.stat().st_ino
        except FileNotFoundError:
            continue
    return found


def wait_for_new_checkpoint(directory: Path, before: dict[Path, int], process: subprocess.Popen,
                            timeout: float = 120) -> bool:  # fmt: skip
    """Wait until the process has written a checkpoint of its own (True) or has ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = checkpoints(directory)
        if now and any(before.get(path) != inode for path, inode in now.items()):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    raise TimeoutError(f"no new checkpoint in {directory} after {timeout} s")


def interrupt_and_resume(command: list[str], out: Path, kills: list[int], seed: int) -> list[int]:
    """Run `command` (with --resume), killing it with each signal of `kills` at a random moment after its
    first checkpoint; then let it finish. Returns the exit codes of the interrupted runs."""
    rng = random.Random(seed)
    codes = []
    for number in kills:
        before = checkpoints(out)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=environment(), start_new_session=True)  # fmt: skip
        if wait_for_new_checkpoint(out, before, process):
            time.sleep(rng.uniform(0.0, 0.25))
            os.killpg(process.pid, number) if number == signal.SIGKILL else process.send_signal(number)
        _, stderr = process.communicate(timeout=120)
        codes.append(process.returncode)
        # Killed outright (kill -9, or a signal after the run loop, while the outputs are written atomically):
        # the last checkpoint stands. Otherwise the run saved its checkpoint and said so.
        if process.returncode not in (0, -signal.SIGKILL, -number):
            # One line saying how to go on, and the shell's code for the signal (torchrun reports its own)
            assert "continue with the same command and --resume" in stderr, stderr[-3000:]
            assert process.returncode == 128 + number or "torch.distributed.run" in command
    final = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    return codes


def test_kill_and_sigterm_at_random_points_then_resume_equal_an_uninterrupted_run(inputs, reference, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "plmlens", *analyze_args(inputs, out, "--resume", "--checkpoint-seconds", "0")]
    kills = [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGTERM]
    codes = interrupt_and_resume(command, out, kills, seed=7)
    interrupted = [code for code in codes if code != 0]
    assert len(interrupted) >= 5, codes  # the kills landed inside the run
    assert {-signal.SIGKILL, 143} <= set(codes)
    assert_same_run(reference, out)
    again = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_distributed_sigterm_then_resume_per_rank(inputs, reference, tmp_path):
    out = tmp_path / "run"
    launcher = ("--nproc-per-node=2", f"--master-port={free_port()}")
    command = torchrun(*analyze_args(inputs, out, "--resume", "--checkpoint-seconds", "0"), launcher=launcher)
    codes = interrupt_and_resume(command, out, [signal.SIGTERM], seed=3)
    assert codes[0] != 0
    assert_same_run(reference, out)


def test_checkpoint_errors_are_one_line(inputs, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.npz").write_bytes(b"garbage")
    refused = plmlens(*analyze_args(inputs, out))
    assert refused.returncode == 2 and "holds an interrupted run" in refused.stderr
    damaged = plmlens(*analyze_args(inputs, out, "--resume"))
    assert damaged.returncode == 2 and "unreadable checkpoint" in damaged.stderr
    for result in (refused, damaged):
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and sum("error" in line for line in lines) == 1
        assert "Traceback" not in result.stderr
    done = plmlens(*analyze_args(inputs, out, "--overwrite", "--limit", "6"))
    assert done.returncode == 0, done.stderr
    other = plmlens(*analyze_args(inputs, out, "--resume", "--limit", "6", "--seed", "9"))
    assert other.returncode == 2 and "settings.seed: 123 there, 9 here" in other.stderr


def test_a_failing_rank_ends_the_whole_job(inputs, tmp_path):
    script = Path(__file__).with_name("dist_fail_script.py")
    port = free_port()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={port}", str(script),
         inputs["model"], inputs["data"]],
        capture_output=True, text=True, env=environment(), timeout=240,
    )  # fmt: skip
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr
    assert time.monotonic() - started < 200  # rank 0, waiting for rank 1 at the all-reduce, did not hang
