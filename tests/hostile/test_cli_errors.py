"""Every error a user can fix is one ``error:`` line with exit code 2, saying what to do.

The first test enumerates every exception class the package defines: each is a ``UserError``
(or a ``ValueError``, the configs' convention), or it is listed below with why it never reaches
the command line as a user's error. A new class must take a side, so no refusal can silently
become a traceback again. The others drive the refusals the CLI meets for real.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import pkgutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import sononet
from hostile.builders import FEATURES, assert_refused, bounded, cli, edit_json, save_cnn
from sononet.errors import UserError

# Exceptions that are not a user's mistake at the command line, and what becomes of them instead.
NOT_USER_ERRORS = {
    "sononet.errors.AudioError": "an errors-table row (label, prepare); the API raises it with the row's reason",
    "sononet.errors.DiskFullError": "one line, exit 1: free space and rerun (tests/test_hardening.py)",
    "sononet.errors.Interrupted": "Ctrl-C or SIGTERM: exit 130 or 143, the run marked interrupted",
    "sononet.stopping.TerminatedError": "SIGTERM: training checkpoints at the next step, exit 143 (test_stopping.py)",
    "sononet.corpus.download._TransientError": "one failed download attempt, retried, then a summary line",
    "sononet.corpus.download._FinalError": "one file's download refused, reported in the summary",
    "sononet.corpus.download._StopRequestedError": "Ctrl-C reaching a download worker",
}


def defined_exceptions() -> list[type[BaseException]]:
    found = set()
    for info in pkgutil.walk_packages(sononet.__path__, "sononet."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and not issubclass(obj, Warning) and obj.__module__.startswith("sononet"):
                found.add(obj)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def instance(cls: type[BaseException], message: str) -> BaseException:
    """``cls`` built with ``message`` in every required argument (ConfigError takes four)."""
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
              if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]  # fmt: skip
    return cls(*[message] * max(1, len(params)))


def test_every_exception_class_is_a_user_error_or_says_why_not(tmp_path: Path, monkeypatch) -> None:
    classes = defined_exceptions()
    names = {f"{c.__module__}.{c.__qualname__}" for c in classes}
    assert not set(NOT_USER_ERRORS) - names, "listed classes that no longer exist"
    assert len(classes) > len(NOT_USER_ERRORS)  # the walk found the package's own errors
    user = [c for c in classes if f"{c.__module__}.{c.__qualname__}" not in NOT_USER_ERRORS]
    for cls in user:
        assert issubclass(cls, UserError | ValueError), f"{cls.__qualname__} is neither a UserError nor listed"
        err = instance(cls, "hostile /path/x")

        def fail(*a, _err=err, **k):
            raise _err

        monkeypatch.setattr("sononet.prepare.prepare", fail)
        code, out = cli("prepare", "--demo", "--out", str(tmp_path / "shards"))
        assert_refused(code, out, "hostile /path/x")


def test_a_multi_line_message_is_still_one_line(tmp_path: Path, monkeypatch) -> None:
    def fail(*a, **k):
        raise UserError("first line says what to do\nsecond line must not leak")

    monkeypatch.setattr("sononet.prepare.prepare", fail)
    code, out = cli("prepare", "--demo", "--out", str(tmp_path))
    assert_refused(code, out, "first line says what to do")
    assert "second line" not in out


def test_a_changed_config_into_the_same_out_is_one_line(cremad_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    args = ["prepare", "--data", str(cremad_dir), "--out", str(out), "--device", "cpu", "--mel-backend", "torchaudio"]
    assert cli(*args)[0] == 0
    code, text = cli(*args, "--shard-size", "7")
    assert_refused(code, text, "holds shards made with a different shard_size", "pass a new --out")


def test_an_out_that_is_a_file_is_refused_by_every_writer(
    tmp_path: Path, model_dir: Path, wavs: Path, cremad_dir: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for args in (
        ["prepare", "--demo", "--out", str(taken)],
        ["prepare", "--demo", "--out", str(taken / "below")],
        ["export", "--model", str(model_dir), "--out", str(taken)],
        ["evaluate", "--model", str(model_dir), "--data", str(cremad_dir), "--out", str(taken)],
        ["train-all", "--out", str(taken), "--models", "cnn"],
        ["label", str(wavs), "--model", str(model_dir), "--out", str(tmp_path / "taken.parquet")],
    ):
        if args[0] == "label":
            (tmp_path / "taken.parts").write_text("a file where the parts folder goes")
        code, text = cli(*args)
        assert_refused(code, text, "is a file")
    assert taken.read_text() == "not a folder"
    (tmp_path / "dir.parquet").mkdir()
    code, text = cli("label", str(wavs), "--model", str(model_dir), "--out", str(tmp_path / "dir.parquet"))
    assert_refused(code, text, "not a folder")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_lock_file_that_is_not_a_file_is_refused_and_never_followed(tmp_path: Path, kind: str) -> None:
    out, target = tmp_path / "shards", tmp_path / "precious.txt"
    out.mkdir()
    target.write_text("keep me")
    {"symlink": lambda: (out / ".lock").symlink_to(target), "fifo": lambda: os.mkfifo(out / ".lock"),
     "folder": lambda: (out / ".lock").mkdir()}[kind]()  # fmt: skip
    code, text = cli("prepare", "--demo", "--out", str(out))
    assert_refused(code, text, ".lock is not a regular file", "remove it")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("opset", ["0", "-3", "99", "6", "21"])
def test_bad_opsets_are_one_line(opset: str, model_dir: Path, tmp_path: Path) -> None:
    code, text = cli("export", "--model", str(model_dir), "--out", str(tmp_path / "x"), "--opset", opset)
    assert_refused(code, text, "opset must be an integer from 7 to 20")
    assert not (tmp_path / "x").exists()


TAMPERED = [
    ("meta.feature_config.n_fft", 1 << 30, "n_fft must be from 16 to"),
    ("meta.feature_config.top_db", -80.0, "top_db must be a positive finite number"),
    ("meta.feature_config.sample_rate", True, "sample_rate must be a positive integer"),
    ("meta.feature_config.hop_length", 0, "hop_length must be a positive integer"),
    ("meta.feature_config.clip_samples", 10**10, "clip_samples must be at most 60 s"),
    ("meta.feature_config.fmax", 1e9, "fmax <= sample_rate / 2"),
    ("meta.feature_config.pad", "left", "pad must be one of"),
    ("model_config.channels", [4, 100_000], "model.safetensors does not fit the model"),
    ("model_config.n_classes", 3_000_000, "meta.labels must hold one label per class"),
]


@pytest.mark.parametrize(("key", "value", "match"), TAMPERED, ids=[k for k, _, _ in TAMPERED])
def test_a_tampered_config_json_is_refused_at_load_and_not_exported(
    key: str, value: object, match: str, tmp_path: Path, wavs: Path
) -> None:
    model = save_cnn(tmp_path / "m")
    edit_json(model / "config.json", key, value)
    code, text = cli("export", "--model", str(model), "--out", str(tmp_path / "onnx"))
    assert_refused(code, text, match)
    assert not (tmp_path / "onnx").exists()
    code, text = cli("label", str(wavs), "--model", str(model), "--out", str(tmp_path / "l.parquet"))
    assert_refused(code, text, match)


SPECS = [
    ("train-all", ['models=["nope"]'], "unknown model(s) ['nope']"),
    ("train-all", ["prepare.features.n_fft=1073741824"], "n_fft must be from 16 to"),
    ("train-all", ["prepare.features.top_db=-80.0"], "top_db must be a positive finite number"),
    ("train-all", ['prepare.label_map={CAL=""}'], "empty label"),
    ("train-all", ['prepare.label_map={CAL="=NEU"}'], "holds '=' or ','"),
    ("train-all", ["prepare.audio.sample_rate=1"], "sample_rate must be at least 4000 Hz"),
    ("label-folder", ["hop_s=1e-9"], "hop_s >= 0.01"),
    ("label-folder", ["window_s=nan"], "window_s must be a finite number"),
    ("label-folder", ["window_s=1e12"], "need window_s <= 60"),
]


@pytest.mark.parametrize(("job", "sets", "match"), SPECS, ids=[s[1][0] for s in SPECS])
def test_hostile_job_specs_are_refused_by_print_spec(job: str, sets: list[str], match: str, tmp_path: Path) -> None:
    from sononet.cli.batch import cli as batch

    args = [job, "--print-spec", "--out", str(tmp_path), *(a for s in sets for a in ("--set", s))]
    result = CliRunner().invoke(batch, args)
    assert result.exit_code == 2 and "bad spec" in result.output and match in result.output, result.output


def test_a_spec_file_that_is_a_fifo_is_refused_without_reading(tmp_path: Path) -> None:
    from sononet.cli.batch import cli as batch

    os.mkfifo(tmp_path / "job.toml")
    with bounded(30):
        result = CliRunner().invoke(batch, [str(tmp_path / "job.toml"), "--print-spec", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no job spec" in result.output, result.output


def test_a_tensorboard_path_that_is_a_file_warns_and_training_goes_on(tmp_path: Path, caplog) -> None:
    from sononet.train.tensorboard import TrainingBoard

    (tmp_path / "tb").write_text("a file where the curves go")
    with caplog.at_level(logging.WARNING):
        board = TrainingBoard(tmp_path / "tb", ["ANG", "SAD"])
    board.epoch({"epoch": 1, "train_loss": 1.0})
    board.close()
    assert "no TensorBoard curves" in caplog.text and (tmp_path / "tb").read_text() == "a file where the curves go"


def test_a_missing_backbone_is_one_line(cremad_dir: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-encoder")
    code, text = cli("train-all", "--data", str(cremad_dir), "--out", str(tmp_path / "run"), "--models", "wav2vec2",
                     "--w2v2", missing, "--epochs", "1", "--device", "cpu", "--jobs", "1")  # fmt: skip
    assert_refused(code, text, "no-such-encoder")


def test_permission_denied_on_an_output_is_one_line(tmp_path: Path, monkeypatch) -> None:
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / "x"))

    monkeypatch.setattr("sononet.prepare.prepare", denied)
    code, text = cli("prepare", "--demo", "--out", str(tmp_path / "ro"))
    assert_refused(code, text, "Permission denied", str(tmp_path / "ro" / "x"))


def test_the_saved_tiny_model_is_still_usable(model_dir: Path, tmp_path: Path) -> None:
    """The refusals above are of tampered copies: the model they started from exports and labels."""
    code, text = cli("export", "--model", str(model_dir), "--out", str(tmp_path / "onnx"))
    assert code == 0, text
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert info["feature_config"]["n_fft"] == FEATURES.n_fft and (tmp_path / "onnx" / "model.onnx").stat().st_size
