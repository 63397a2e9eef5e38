"""The process side of training at scale: the ways a job is launched on clusters give the same run, a restarted
or stopped job ends by itself, a library call leaves its caller's process as it found it.

Every launch trains one tiny deterministic classification run (``cluster_helpers.train_args``: 2 processes, 2
loader workers each, crops, flips, mixup and DropBlock on) and compares its weights, bit for bit, with the same
run under ``torchrun --nproc_per_node 2`` (the ``reference`` fixture, trained once).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .cluster_helpers import (
    EPOCHS,
    finish,
    free_port,
    kill_worker_after_first_checkpoint,
    launcher_env,
    same_weights,
    start,
    torchrun,
    train_args,
    weights,
)
from .train_helpers import REPO, make_image_folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The data and the final weights of the run under ``torchrun --standalone --nproc_per_node 2``."""
    root = tmp_path_factory.mktemp("reference")
    data = make_image_folder(root / "data", per_class=8)  # 32 images: 4 steps of 2 x 4 per epoch
    command = [*torchrun("--standalone", "--nproc_per_node", "2"), *train_args(data, root / "run")]
    outcome = finish(start(command, root / "run.log"), root / "run.log", time.monotonic(), 1800)
    assert outcome.returncode == 0, outcome.output
    return {"data": data, "weights": weights(root / "run")}


def test_train_inside_the_callers_process_group_leaves_it_and_the_settings(reference: dict, tmp_path: Path) -> None:
    """A 2-process program of its own (torchrun) sets threads, determinism and seeds, joins a gloo group, calls
    ``splitattn.tasks.classification.train`` and then all-reduces in its group: the group, the settings and the
    random stream are the caller's again, and the run trained as under torchrun."""
    program = tmp_path / "caller.py"
    program.write_text(
        textwrap.dedent(
            f"""
            import json, os, sys
            import torch, torch.distributed as dist
            from splitattn.tasks.classification import train

            torch.set_num_threads(2)
            torch.use_deterministic_algorithms(False)
            dist.init_process_group("gloo")
            group = dist.group.WORLD
            torch.manual_seed(123)
            expected = torch.rand(3)
            torch.manual_seed(123)
            options = dict(
                data={str(reference["data"])!r}, output={str(tmp_path / "run")!r}, model="resnest14",
                model_kwargs=dict(bottleneck_width=16, stem_width=16), img_size=32, norm="groupnorm",
                epochs={EPOCHS}, batch_size=4, lr=0.01, warmup_epochs=1.0, mixup=0.2, drop_block=0.1,
                rrc_scale=[0.5, 1.0], workers=2, seed=5, deterministic=True, threads=1, progress=False,
                tensorboard=False, device="cpu",
            )
            train(options)
            total = torch.tensor([dist.get_rank() + 1.0])
            dist.all_reduce(total)
            print(json.dumps(dict(
                rank=dist.get_rank(), same_group=dist.group.WORLD is group, backend=dist.get_backend(),
                sum=total.item(), threads=torch.get_num_threads(),
                deterministic=torch.are_deterministic_algorithms_enabled(),
                cublas=os.environ.get("CUBLAS_WORKSPACE_CONFIG"), stream=torch.equal(torch.rand(3), expected),
            )), flush=True)
            dist.destroy_process_group()
            """
        )
    )
    log = tmp_path / "caller.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(program)]
    outcome = finish(start(command, log), log, time.monotonic(), 1800)
    assert outcome.returncode == 0, outcome.output
    reports = [json.loads(line) for line in outcome.output.splitlines() if line.startswith('{"rank"')]
    assert sorted(report["rank"] for report in reports) == [0, 1]
    for report in reports:
        assert report["same_group"] and report["backend"] == "gloo" and report["sum"] == 3.0, report
        assert report["threads"] == 2 and report["deterministic"] is False and report["cublas"] is None, report
        assert report["stream"], "the caller's seeded random stream did not continue where it was"
    assert same_weights(weights(tmp_path / "run"), reference["weights"])


def test_srun_without_torchrun_trains_as_torchrun(reference: dict, tmp_path: Path) -> None:
    """Two processes started as srun starts them (SLURM_* variables, no torchrun, no RANK) form one group."""
    port, processes = free_port(), []
    for rank in range(2):
        env = launcher_env()
        env.update(
            SLURM_JOB_ID="4242",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NODEID="0",
            SLURM_STEP_NUM_TASKS="2",
            SLURM_STEP_TASKS_PER_NODE="2",
            SLURM_STEP_NODELIST="127.0.0.1",
            SLURM_NTASKS="2",
            MASTER_PORT=str(port),
        )
        args = train_args(reference["data"], tmp_path / "run")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "splitattn", *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [process.communicate(timeout=1800)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(outputs)
    assert "8 = 4 x 2 process(es)" in outputs[0]
    assert same_weights(weights(tmp_path / "run"), reference["weights"])


def test_two_launchers_as_two_nodes_train_as_one_launcher(reference: dict, tmp_path: Path) -> None:
    """``torchrun --nnodes 2 --node_rank {0,1} --master_addr 127.0.0.1`` (one process each) = one launcher of 2."""
    port, jobs = free_port(), []
    for node in range(2):
        launcher = ("--nnodes", "2", "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port))
        command = [*torchrun(*launcher, "--nproc_per_node", "1"), *train_args(reference["data"], tmp_path / "run")]
        jobs.append(start(command, tmp_path / f"node{node}.log"))
    outcomes = [finish(job, tmp_path / f"node{node}.log", time.monotonic(), 1800) for node, job in enumerate(jobs)]
    assert [o.returncode for o in outcomes] == [0, 0], "\n".join(o.output for o in outcomes)
    assert same_weights(weights(tmp_path / "run"), reference["weights"])


def test_elastic_restart_after_a_killed_worker_ends_with_the_uninterrupted_weights(
    reference: dict, tmp_path: Path
) -> None:
    """torchrun --max-restarts 1, a worker SIGKILLed after the first checkpoint: the restarted workers build a
    new process group (not from the dead ones' addresses), resume the same checkpoint and finish alike.
    benchmarks/elastic_restart.py repeats this 10 times."""
    run = tmp_path / "run"
    command = [
        *torchrun("--standalone", "--nproc_per_node", "2", "--max-restarts", "1"),
        *train_args(reference["data"], run),
        "--resume",
        "auto",
    ]
    outcome = kill_worker_after_first_checkpoint(command, run, rank=1)
    assert outcome.returncode == 0, outcome.output
    assert "resuming after epoch" in outcome.output, "the worker was killed after the job had finished"
    assert same_weights(weights(run), reference["weights"])


def test_a_lost_process_ends_the_job_at_the_timeout(reference: dict, tmp_path: Path) -> None:
    """A worker that stops answering (SIGSTOP) ends the job through --dist-timeout, not after torch's 30 minutes."""
    run = tmp_path / "run"
    command = [
        *torchrun("--standalone", "--nproc_per_node", "2"),
        *train_args(reference["data"], run),
        "--dist-timeout",
        "15",
    ]
    outcome = kill_worker_after_first_checkpoint(command, run, rank=1, sig=signal.SIGSTOP, deadline=900)
    assert outcome.returncode not in (None, 0), outcome.output
    assert "did not answer within the distributed timeout (dist_timeout, 15 s)" in outcome.output, outcome.output
    print(f"the job ended {outcome.seconds:.0f} s after it started")


def test_ctrl_c_saves_and_prints_one_line_with_the_command_that_continues(tmp_path: Path) -> None:
    """SIGINT to the whole process group (as a terminal's Ctrl-C): exit 130, no traceback, one line whose command
    continues the run to its end."""
    data = make_image_folder(tmp_path / "data", per_class=4)
    run = tmp_path / "run"
    args = [*train_args(data, run, epochs=4), "--workers", "1"]  # the last --workers counts
    process = subprocess.Popen(
        [sys.executable, "-m", "splitattn", *args],
        cwd=REPO,
        env=launcher_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    while process.poll() is None and not (run / "last.pt").exists():
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr, stderr
    hints = [line for line in stderr.splitlines() if "continue with: " in line]
    assert len(hints) == 1 and "SIGINT" in hints[0], stderr
    command = shlex.split(hints[0].split("continue with: ")[1])
    assert command[0] == "splitattn" and command[-4:] == ["--resume", "auto", "--output", str(run)]
    continued = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, env=launcher_env(), capture_output=True, text=True
    )
    assert continued.returncode == 0, continued.stdout + continued.stderr
    assert "; resuming " in continued.stdout and (run / "metrics.json").exists()


def test_every_rank_uses_the_run_folder_rank_0_chose(tmp_path: Path) -> None:
    """Two ranks that see different files (each in its own working directory) still get rank 0's choice."""
    program = tmp_path / "choose.py"
    program.write_text(
        textwrap.dedent(
            """
            import json, os
            from pathlib import Path
            import torch.distributed as dist
            from splitattn.engine.checkpoint import run_folder

            dist.init_process_group("gloo")
            rank = dist.get_rank()
            os.chdir(f"rank{rank}")
            folder, resume = run_folder(None, Path("runs") / "resnest14", resume="auto")
            print(json.dumps(dict(rank=rank, folder=str(folder), resume=str(resume))), flush=True)
            dist.destroy_process_group()
            """
        )
    )
    seen_by_rank_0 = tmp_path / "rank0" / "runs"
    for name, files in (("resnest14", ("last.pt", "metrics.json")), ("resnest14-2", ("last.pt",))):
        (seen_by_rank_0 / name).mkdir(parents=True)
        for file in files:
            (seen_by_rank_0 / name / file).write_text("{}")
    (tmp_path / "rank1").mkdir()  # rank 1 sees no run at all: alone it would start runs/resnest14
    log = tmp_path / "choose.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(program)]
    outcome = finish(start(command, log, cwd=tmp_path), log, time.monotonic(), 600)
    assert outcome.returncode == 0, outcome.output
    reports = [json.loads(line) for line in outcome.output.splitlines() if line.startswith('{"rank"')]
    assert len(reports) == 2
    for report in reports:
        assert report["folder"] == "runs/resnest14-2" and report["resume"] == "runs/resnest14-2/last.pt", report
