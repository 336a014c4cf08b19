"""SIGTERM stops a run at a clean point with what it needs to resume: the handler's rules, the
worker processes, an exact mid-epoch resume, and a real ``sononet-batch train-all`` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_cremad_like

from sononet import stopping
from sononet.corpus.splits import SplitConfig
from sononet.device import worker_pool
from sononet.features.reader import ShardStream, load_metadata
from sononet.prepare import PrepareConfig, prepare
from sononet.stopping import TerminatedError
from sononet.train.augment import AugmentConfig
from sononet.train.checkpoint import CHECKPOINT
from sononet.train.config import TrainConfig
from sononet.train.loop import train_model
from sononet.train.shard_info import shard_splits

CPU = torch.device("cpu")
LABELS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]


# --- the handler ------------------------------------------------------------------------------


def test_outside_a_cooperative_block_sigterm_raises_at_once() -> None:
    with stopping.handling():
        with pytest.raises(TerminatedError):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs before this returns
        assert stopping.requested()
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal is only recorded: the first is being handled
    with stopping.handling():
        assert not stopping.requested()  # a new run starts without the old request


def test_inside_a_cooperative_block_sigterm_is_only_recorded_until_a_poll() -> None:
    polled = []
    with stopping.handling(), pytest.raises(TerminatedError), stopping.cooperative():
        os.kill(os.getpid(), signal.SIGTERM)
        polled.append(stopping.requested())
    assert polled == [True]  # the block ran on; leaving it raised, as nobody acted on the request


def test_handling_puts_the_previous_handler_back() -> None:
    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not expected to run")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with stopping.handling():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_stop(seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if stopping.requested():
            return True
        time.sleep(0.05)
    return False


def _signal_myself() -> tuple[bool, int]:
    os.kill(os.getpid(), signal.SIGTERM)  # `kill` of the process group reaches workers too
    return _wait_for_stop(60), os.getpid()


def test_workers_see_the_parents_request_and_survive_their_own_sigterm() -> None:
    with stopping.handling():
        pool, _ = worker_pool(1)
        with pool:
            waiting = pool.submit(_wait_for_stop, 120)
            time.sleep(0.5)
            stopping.request()
            assert waiting.result(timeout=180)
            stopping._request.clear()  # the worker's own signal must set it again
            asserted, pid = pool.submit(_signal_myself).result(timeout=180)
            assert asserted and pid != os.getpid()
            assert pool.submit(os.getpid).result(timeout=60) == pid  # recorded, not killed


# --- training ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stop")
    write_cremad_like(root / "data", [str(2001 + i) for i in range(8)], ["DFA", "IEO"])
    cfg = PrepareConfig(
        data=str(root / "data"), out=str(root / "shards"), shard_size=40, mel_backend="torchaudio", device="cpu"
    )
    prepare(cfg, progress=False)
    return root / "shards"


def _stop_at_poll(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the ``n``-th poll of the stop request (1-based) see a SIGTERM."""
    polls = iter(range(1, 10**9))
    monkeypatch.setattr(stopping, "requested", lambda: next(polls) >= n)


@pytest.mark.parametrize("where", ["mid-epoch", "end-of-epoch passes"])
def test_a_stopped_run_resumes_mid_epoch_to_the_same_weights(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A stop after step 2 of epoch 2 (or in its BatchNorm/validation passes) leaves a checkpoint of
    that step; the resume skips the trained batches and ends where an uninterrupted run ends."""
    meta = load_metadata(shards, ["clip_id", "speaker", "sex"]).to_pandas()
    splits = shard_splits(meta, SplitConfig(seed=0))
    cfg = TrainConfig(epochs=3, batch_size=8, augment=AugmentConfig(noise_std=0.1), tensorboard=False)
    ids = {s: [c for c, v in splits.items() if v == s] for s in ("train", "val")}
    steps = len(ShardStream(shards, ids["train"], LABELS, batch_size=8))
    polls_per_epoch = 1 + 2 * steps + len(ShardStream(shards, ids["val"], LABELS, batch_size=8, shuffle=False))
    straight = train_model("cnn", shards, splits, LABELS, cfg, tmp_path / "a", CPU, progress=False)

    # Epoch 2's polls: one at the top of the loop, one after each step, one before each batch of the
    # BatchNorm pass (which draws dropout noise) and of validation.
    at = 2 if where == "mid-epoch" else steps
    _stop_at_poll(monkeypatch, polls_per_epoch + 1 + (2 if where == "mid-epoch" else steps + 2))
    with pytest.raises(TerminatedError):
        train_model("cnn", shards, splits, LABELS, cfg, tmp_path / "b", CPU, progress=False)
    state = torch.load(tmp_path / "b" / "checkpoint" / CHECKPOINT, weights_only=True)["state"]
    assert (state["epoch"], state["batch"], state["step"]) == (1, at, steps + at)
    monkeypatch.undo()

    resumed = train_model("cnn", shards, splits, LABELS, cfg, tmp_path / "b", CPU, resume=True, progress=False)
    assert resumed.digests == straight.digests
    assert resumed.history == straight.history


# --- a real process ---------------------------------------------------------------------------

BATCH = Path(sys.executable).with_name("sononet-batch")
TINY = ["--set", "prepare.demo_actors=8", "--set", "device=cpu", "--set", "prepare.mel_backend=torchaudio",
        "--set", "train.tensorboard=false", "--set", 'models=["cnn"]']  # fmt: skip


def _sononet_batch(workdir: Path, *sets: str) -> list[str]:
    return [str(BATCH), "train-all", "--out", str(workdir), "--set", f"prepare.out={workdir.parent}/shards", *TINY,
            *(a for s in sets for a in ("--set", s))]  # fmt: skip


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus's shards, prepared once for the runs below (each run's prepare skips them)."""
    if not BATCH.exists():
        pytest.skip(f"no sononet-batch console script beside {sys.executable}")
    root = tmp_path_factory.mktemp("demo")
    cmd = [str(BATCH), "prepare", "--out", str(root), "--set", "out=shards", "--set", "demo_actors=8",
           "--set", "device=cpu", "--set", "mel_backend=torchaudio"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    return root


@pytest.mark.parametrize("jobs", [1, 2], ids=["one-process", "worker-processes"])
def test_sigterm_stops_training_with_a_checkpoint_and_the_rerun_resumes(demo_workdir: Path, jobs: int) -> None:
    """SIGTERM to the command alone, as ``docker stop`` sends it, while models train (in this process,
    or in two spawned workers, one fold each of three): exit 143 with a checkpoint in every model that
    was training; the same command with the epoch count lowered to the stop's epoch finishes that epoch."""
    work = demo_workdir / f"jobs-{jobs}"
    sets = [f"jobs={jobs}", "split.folds=3"] if jobs > 1 else []
    run_dir = work / "runs" / "demo"
    models = [run_dir / f"fold-{k}" / "cnn" for k in range(3)] if jobs > 1 else [run_dir / "cnn"]
    work.mkdir()
    with open(work / "stderr.txt", "w+") as stderr_file:  # a pipe nobody reads would fill and block the job
        proc = subprocess.Popen(_sononet_batch(work, "train.epochs=50", *sets), stderr=stderr_file)
        try:
            deadline = time.monotonic() + 900
            while not any((m / "checkpoint" / CHECKPOINT).exists() for m in models):  # an epoch is done
                assert proc.poll() is None and time.monotonic() < deadline, "training never checkpointed"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=600)
        finally:
            proc.kill()
        stderr = (work / "stderr.txt").read_text()
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "sononet-batch: terminated (SIGTERM); rerun the same command to resume"
    stopped = {m: torch.load(m / "checkpoint" / CHECKPOINT, weights_only=True)["state"] for m in models
               if (m / "checkpoint" / CHECKPOINT).exists()}  # fmt: skip
    assert len(stopped) >= jobs  # every worker was training
    for s in stopped.values():
        assert f"stopped in epoch {s['epoch'] + 1} after step {s['batch']} of" in stderr, stderr
    assert not any((m / "done.json").exists() for m in models)

    epochs = max(s["epoch"] for s in stopped.values()) + 1  # the epoch the stop interrupted, and no more
    again = subprocess.run(
        _sononet_batch(work, f"train.epochs={epochs}", *sets), capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr
    for s in stopped.values():
        resumed = f"resumed in epoch {s['epoch'] + 1} after step {s['batch']}" if s["batch"] else "resumed after"
        assert resumed in again.stderr, again.stderr
    for m in models:
        assert len(torch.load(m / "checkpoint" / CHECKPOINT, weights_only=True)["state"]["history"]) == epochs
        assert (m / "done.json").exists()


def test_sononet_train_handles_sigterm_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`sononet train` started on its own (no sononet-batch around it) installs the handler for its run."""
    import sononet.training as training

    seen = []
    monkeypatch.setattr(training, "resolve_training", lambda cfg: cfg)
    monkeypatch.setattr(training, "_train", lambda *a: seen.append(signal.getsignal(signal.SIGTERM)) or {})
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        training.run_training(training.TrainingConfig(shards=str(tmp_path), out=str(tmp_path / "out"), device="cpu"))
        assert seen == [stopping._on_sigterm] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


def test_scoring_queued_behind_a_stop_does_not_start(tmp_path: Path) -> None:
    """A model's scoring (predictions, robustness suite) waits in train-all's worker queue behind
    training; once a stop was asked for it raises at once instead of running past the grace period."""
    from sononet.evaluate.robustness import RobustnessConfig
    from sononet.experiment import ScoreUnit, score_unit

    unit = ScoreUnit("cnn", 0, str(tmp_path / "never-trained"), {"a": "test"}, None)
    with stopping.handling():
        stopping.request()
        with pytest.raises(TerminatedError):
            score_unit(unit, str(tmp_path), refit=False, device="cpu", robustness=RobustnessConfig(), folds=1)
    assert not stopping.requested()


@pytest.mark.parametrize("command", [["train-all"], ["nested", "--outer-folds", "0"]])
def test_sononet_commands_end_a_sigterm_in_one_line_with_exit_143(
    command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without sononet-batch around it, a stopped `sononet train-all` says what to do, not a traceback."""
    from click.testing import CliRunner

    import sononet.experiment
    import sononet.nested
    from sononet.cli import main

    def stopped(*a, **k):
        raise stopping.TerminatedError

    monkeypatch.setattr(sononet.experiment, "run_experiment", stopped)
    monkeypatch.setattr(sononet.nested, "run_nested", stopped)
    r = CliRunner().invoke(main, [*command, "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert r.exit_code == 143, r.output
    assert r.output.strip().splitlines()[-1] == "error: terminated (SIGTERM); rerun the same command to resume"
    assert "Traceback" not in r.output
