"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy train what one process
with two replicas trains; only the chief writes, and a killed pair resumes from its checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from model.network.model_card import load_exported_model, read_model_card
from tests.conftest import REPO_ROOT
from tests.train_job.run_state.test_rerun import cli_argv
from tests.train_job.test_train import tiny_config
from train_job.run_state.checkpoint import Checkpoints

# End to end: the slow tier (bash scripts/test.sh --slow).
pytestmark = pytest.mark.slow

RUN = {
    "epochs": 2,
    "fine_tune_epochs": 1,
    "learning_rate": 1e-3,
}  # both phases, phase 1 long enough to be killed in
START_TIMEOUT = 300  # seconds for a pair of workers to finish (2 shared CPU cores)


@dataclasses.dataclass
class Worker:
    """One worker process, its log files and, once finished, its exit code."""

    process: subprocess.Popen
    stdout: str
    stderr: str

    def finish(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        with open(self.stderr) as handle:
            return handle.read()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def start_workers(log_dir, argvs: list[list[str]], name: str) -> list[Worker]:
    """One train_job/main.py process per argv, as the workers of one TF_CONFIG cluster."""
    cluster = [f"127.0.0.1:{port}" for port in free_ports(len(argvs))]
    workers = []
    for index, argv in enumerate(argvs):
        tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONPATH": str(REPO_ROOT)}
        stdout, stderr = (str(log_dir / f"{name}-{index}.{kind}") for kind in ("out", "err"))
        with open(stdout, "w") as out, open(stderr, "w") as err:
            process = subprocess.Popen(
                [sys.executable, "train_job/main.py", *argv],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
        workers.append(Worker(process, stdout, stderr))
    return workers


def run_workers(log_dir, argvs: list[list[str]], name: str) -> list[Worker]:
    """Start the workers and wait for all of them (killing all if one hangs)."""
    workers = start_workers(log_dir, argvs, name)
    try:
        for worker in workers:
            worker.finish(START_TIMEOUT)
    finally:
        kill(workers)
    return workers


def kill(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait()


def error_lines(worker: Worker) -> list[str]:
    return [line for line in worker.log().splitlines() if line.startswith("error: ")]


def mirrored_reference(data_dir, output_dir) -> subprocess.Popen:
    """The same training in one process with two replicas (MirroredStrategy on two CPUs)."""
    script = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests.train_job.test_train import tiny_config
from train_job.train import train
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
train(tiny_config({str(data_dir)!r}, {str(output_dir)!r}, **{RUN!r}), strategy=strategy)
"""
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def export_layout(output_dir) -> list[str]:
    """The export's files, TensorBoard event files by their folder (their names hold a pid)."""
    files = []
    for root, _, names in os.walk(output_dir):
        for name in names:
            relative = os.path.relpath(os.path.join(root, name), output_dir)
            if name.startswith("events.out.tfevents"):
                relative = os.path.dirname(relative)
            files.append(relative)
    return sorted(set(files))


def assert_same_numbers(actual, expected, path="card", rel=1e-5):
    """Nested JSON values equal, numbers to float32 round-off (prediction batches differ)."""
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), path
        for key in expected:
            assert_same_numbers(actual[key], expected[key], f"{path}.{key}", rel)
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_numbers(a, e, f"{path}[{index}]", rel)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=rel, abs=rel / 10), path
    else:
        assert actual == expected, path


def test_two_workers_killed_and_resumed_export_what_one_process_with_two_replicas_does(
    synthetic_data_dir, tmp_path
):
    reference_dir = tmp_path / "mirrored"
    reference = mirrored_reference(synthetic_data_dir, reference_dir)
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"
    argvs = [
        cli_argv(tiny_config(synthetic_data_dir, output_dir, **RUN))
        for output_dir in (chief_dir, worker_dir)
    ]
    checkpoints = Checkpoints(str(chief_dir))

    # Killed, both workers, once the chief has checkpointed an epoch.
    workers = start_workers(tmp_path, argvs, "killed")
    deadline = time.monotonic() + START_TIMEOUT
    while checkpoints.load() is None and time.monotonic() < deadline:
        assert all(worker.process.poll() is None for worker in workers), workers[0].log()[-3000:]
        time.sleep(0.2)
    kill(workers)
    state = checkpoints.load()
    assert state is not None and not (chief_dir / "model_card.json").exists()

    # Rerun with another result-changing flag: both refuse with the chief's one line, exit 2.
    changed = [[*argv, "--epochs", "3"] for argv in argvs]
    refused = run_workers(tmp_path, changed, "changed")
    for worker in refused:
        assert worker.process.returncode == 2, worker.log()[-3000:]
        (line,) = error_lines(worker)
        assert (
            "checkpoints of an interrupted run started " in line and "with other settings" in line
        )
        assert "--epochs 2 -> 3" in line
    assert checkpoints.load().epochs_done == state.epochs_done  # nothing lost

    # Rerun as before: both resume from the chief's checkpoint (the other worker's folder has
    # none), and the chief alone writes the export.
    resumed = run_workers(tmp_path, argvs, "resumed")
    for worker in resumed:
        assert worker.process.returncode == 0, worker.log()[-3000:]
        assert f"Resuming at {state.phase} after {state.epochs_done} of its epochs" in worker.log()
    assert export_layout(worker_dir) == []
    assert not (chief_dir / "checkpoints").exists()

    assert reference.wait(timeout=START_TIMEOUT) == 0, reference.stderr.read()[-3000:]
    assert export_layout(chief_dir) == export_layout(reference_dir)
    model, card = load_exported_model(str(chief_dir))
    reference_model, reference_card = load_exported_model(str(reference_dir))
    for weights, reference_weights in zip(
        model.get_weights(), reference_model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(weights, reference_weights, rtol=1e-5, atol=1e-6)
    history = json.loads((chief_dir / "history.json").read_text())
    reference_history = json.loads((reference_dir / "history.json").read_text())
    assert sorted(history) == sorted(reference_history)
    assert {"loss", "auc", "accuracy", "val_loss", "val_auc", "val_accuracy"} <= set(history)
    assert len(history["loss"]) == RUN["epochs"] + RUN["fine_tune_epochs"]
    for key, values in reference_history.items():
        # Each replica keeps its own BatchNorm moving statistics during a phase; checkpoints
        # hold the chief's (replica 0's, the exported ones), so after the resume the other
        # worker validates with the chief's, where the uninterrupted reference used its own.
        rel = 1e-3 if key.startswith("val_") else 1e-5
        assert_same_numbers(history[key], values, f"history.{key}", rel)
    written, expected = json.loads(card.to_json()), json.loads(reference_card.to_json())
    # Each run lists its own files; the resumed one has more TensorBoard logs.
    files = {p.relative_to(chief_dir).as_posix() for p in chief_dir.rglob("*") if p.is_file()}
    assert set(written["export_files"]) == files - {"model_card.json"}
    for entry in (written, expected):
        del entry["model_id"], entry["created_at"], entry["training_config"]["output_dir"]
        del entry["export_files"]
    assert_same_numbers(written, expected)
    assert card.training_config["replicas"] == 2
    assert card.training_config["global_batch_size"] == 16

    # Rerun into the same folders: nothing to do, on either worker.
    again = run_workers(tmp_path, argvs, "again")
    for worker in again:
        assert worker.process.returncode == 0, worker.log()[-3000:]
        assert "already holds a complete export made with these flags" in worker.log()
    assert read_model_card(str(chief_dir)).model_id == card.model_id


def test_workers_started_with_different_flags_refuse_to_train(synthetic_data_dir, tmp_path):
    argvs = [
        cli_argv(tiny_config(synthetic_data_dir, tmp_path / f"out{index}", seed=seed, **RUN))
        for index, seed in enumerate((1, 2))
    ]
    for worker in run_workers(tmp_path, argvs, "mismatched"):
        assert worker.process.returncode == 2, worker.log()[-3000:]
        (line,) = error_lines(worker)
        assert "the 2 workers see different settings or images" in line
        assert "Traceback" not in worker.log()
    assert not any((tmp_path / "out0").glob("checkpoints/state.npz"))
