"""The process around a run, in one process: launchers' variables, settings given back, stop signals, the choice
of the run folder, the command that continues an interrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from splitattn.cli import _message, continue_command
from splitattn.engine.checkpoint import finished_metrics, run_folder
from splitattn.engine.distributed import first_host, launch_environment
from splitattn.engine.runtime import handle_stop_signals, lost_peer, preserved_runtime, stop_requested
from splitattn.errors import DistributedError, SegmentationDataError, UsageError

SRUN = {  # what srun gives task 5 of a 3-node step: 4 tasks on the first two nodes, 2 on the third
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_STEP_NUM_TASKS": "10",
    "SLURM_STEP_TASKS_PER_NODE": "4(x2),2",
    "SLURM_STEP_NODELIST": "gpu[07-08],cpu-a3",
    "SLURM_NTASKS": "10",
    "SLURM_JOB_ID": "812345",
}


def test_srun_variables_describe_the_task() -> None:
    launch = launch_environment(SRUN)
    assert (launch.launcher, launch.rank, launch.local_rank, launch.world_size) == ("srun", 5, 1, 10)
    assert launch.local_world_size == 4
    assert launch.init_method == f"tcp://gpu07:{29500 + 812345 % 1000}"
    given = launch_environment({**SRUN, "MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "1234"})
    assert given.init_method == "tcp://10.0.0.9:1234"


def test_torchrun_variables_win_and_a_batch_script_is_one_process() -> None:
    torchrun = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    launch = launch_environment({**SRUN, **torchrun})  # srun starting torchrun: torchrun's ranks
    assert (launch.launcher, launch.rank, launch.local_rank, launch.world_size, launch.local_world_size) == (
        "torchrun",
        3,
        1,
        4,
        2,
    )
    # An sbatch script's own shell carries the job's task count but is one process (no step of several tasks).
    batch_shell = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "1"}
    assert launch_environment(batch_shell).world_size == 1
    assert launch_environment({}).launcher == "none"


@pytest.mark.parametrize(
    "nodelist, first",
    [("gpu[07-09,12],cpu3", "gpu07"), ("node1,node2", "node1"), ("rack[2-3]-n[001-004]", "rack2-n001"), ("a", "a")],
)
def test_first_host_of_a_slurm_host_list(nodelist: str, first: str) -> None:
    assert first_host(nodelist) == first


def test_settings_and_random_streams_come_back() -> None:
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_runtime():
        torch.set_num_threads(1 if threads > 1 else 2)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = not benchmark
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        random.seed(9), np.random.seed(9), torch.manual_seed(9)
    assert torch.get_num_threads() == threads and torch.backends.cudnn.benchmark == benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_stop_signals_set_a_flag_and_the_handlers_come_back() -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    with handle_stop_signals(announce=False):
        assert stop_requested() is None
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # Python runs the handler between bytecodes
        assert stop_requested() == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)  # a later signal keeps the first name
        time.sleep(0.05)
        assert stop_requested() == "SIGUSR1"
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C once a stop was asked: stop at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert stop_requested() is None
    assert {number: signal.getsignal(number) for number in before} == before


def _run(folder: Path, files: dict, age: float) -> None:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
        os.utime(folder / name, (time.time() - age, time.time() - age))


def test_resume_auto_without_output_continues_the_latest_unfinished_run(tmp_path: Path) -> None:
    default = tmp_path / "runs" / "resnest14"
    _run(default, {"last.pt": "", "log.jsonl": "", "metrics.json": "{}"}, age=10)  # finished, most recent
    _run(tmp_path / "runs" / "resnest14-2", {"last.pt": "", "log.jsonl": ""}, age=300)  # interrupted
    _run(tmp_path / "runs" / "resnest14-3", {"options.json": "{}"}, age=200)  # died before its first checkpoint
    _run(tmp_path / "runs" / "resnest14-old", {"last.pt": ""}, age=1)  # another name
    assert run_folder(None, default, "auto") == (default.with_name("resnest14-3"), None)
    os.utime(default.with_name("resnest14-2") / "last.pt")  # the interrupted run is now the most recent
    assert run_folder(None, default, "auto") == (
        default.with_name("resnest14-2"),
        default.with_name("resnest14-2") / "last.pt",
    )
    assert run_folder(None, default) == (default.with_name("resnest14-4"), None)  # a fresh run: the first free
    checkpoint = str(default / "last.pt")  # started from a checkpoint: a new folder, never the checkpoint's run
    assert run_folder(None, default, checkpoint) == (default.with_name("resnest14-4"), Path(checkpoint))


def test_resume_auto_names_the_runs_when_all_are_finished(tmp_path: Path) -> None:
    default = tmp_path / "runs" / "resnest14"
    _run(default, {"last.pt": "", "metrics.json": "{}"}, age=10)
    _run(default.with_name("resnest14-2"), {"last.pt": "", "metrics.json": "{}"}, age=5)
    with pytest.raises(UsageError, match="every run named 'resnest14' is finished") as error:
        run_folder(None, default, "auto")
    assert str(default) in str(error.value) and str(default.with_name("resnest14-2")) in str(error.value)
    assert run_folder(None, tmp_path / "runs" / "other", "auto") == (tmp_path / "runs" / "other", None)


def test_a_finished_run_reports_what_it_recorded(tmp_path: Path) -> None:
    assert finished_metrics(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"top1": 61.9, "wall_time_s": 12.5}))
    assert finished_metrics(tmp_path, announce=False) == {"top1": 61.9, "wall_time_s": 12.5}


def test_the_command_that_continues_replaces_the_run_options() -> None:
    argv = ["train", "--data", "d", "--resume=x.pt", "--output", "o", "--exist-ok", "--epochs", "2"]
    assert continue_command(argv, "runs/a b") == "splitattn train --data d --epochs 2 --resume auto --output 'runs/a b'"


def test_collective_failures_are_said_as_what_happened_to_the_job() -> None:
    gloo_timeout = RuntimeError(
        "[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 15000ms for recv operation"
    )
    gloo_gone = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:42398.")
    said = lost_peer(gloo_timeout, 15)
    assert isinstance(
        said, DistributedError
    ) and "did not answer within the distributed timeout (dist_timeout, 15 s)" in str(said)
    assert "another process of the job ended" in str(lost_peer(gloo_gone, 15))
    assert lost_peer(RuntimeError("DataLoader worker (pid 1) is killed by signal"), 15) is None
    assert lost_peer(RuntimeError("DataLoader timed out after 5 seconds"), 15) is None


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> None:
        raise SegmentationDataError("image /data/x.png cannot be read (truncated); replace or remove it.")


def test_an_error_from_a_loader_worker_is_one_line_of_its_own_message() -> None:
    with pytest.raises(SegmentationDataError) as error:
        next(iter(torch.utils.data.DataLoader(_Unreadable(), num_workers=1)))
    assert "Original Traceback" in str(error.value)  # what torch re-raises in the main process
    assert _message(error.value) == "image /data/x.png cannot be read (truncated); replace or remove it."
