"""Ensembles as models: an ensemble folder (or several model folders) answers with the mean of its members'
probabilities in the API, label, evaluate and export, and train-all writes one per fold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import write_cremad_like
from test_label import FEATURES, LABELS, save_tiny, tone

from sononet import EmotionClassifier
from sononet.cli import main
from sononet.errors import UserError
from sononet.models.ensemble import ENSEMBLE_FILE, read_ensemble, write_ensemble
from sononet.models.registry import build_model
from sononet.models.saving import save_model


def save_bigru(directory: Path, labels: list[str] = LABELS) -> Path:
    """A tiny BiGRU without speaker normalisation, beside save_tiny's speaker-normalised CNN."""
    torch.manual_seed(1)
    model = build_model("bigru", n_classes=len(labels), n_mels=FEATURES.n_mels, hidden=8, n_layers=1, attn_hidden=4)
    norm = {"mean": [-30.0] * FEATURES.n_mels, "std": [15.0] * FEATURES.n_mels}
    meta = {"labels": labels, "feature_config": FEATURES.to_dict(), "norm": norm, "input_kind": "mel"}
    return save_model(directory, model.eval(), "bigru", meta)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(cnn folder, bigru folder, ensemble folder beside them)."""
    root = tmp_path_factory.mktemp("ens")
    cnn, bigru = save_tiny(root / "cnn" / "model"), save_bigru(root / "bigru" / "model")
    return cnn, bigru, write_ensemble(root / "ensemble", [cnn, bigru])


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ens-audio")
    sf.write(root / "a.wav", tone(1.5, 8_000, f0=120), 8_000, subtype="PCM_16")
    sf.write(root / "b.flac", tone(2.5, 44_100, f0=220), 44_100)
    sf.write(root / "c_long.wav", tone(8.0, 22_050, seed=1), 22_050)  # several windows
    return root


def load(model: object) -> EmotionClassifier:
    return EmotionClassifier.load(model, device="cpu", mel_backend="torchaudio")


def test_folder_format_is_relative_and_has_a_card(members) -> None:
    cnn, bigru, ens = members
    doc = json.loads((ens / ENSEMBLE_FILE).read_text())
    assert doc["format"] == "sononet-ensemble" and doc["members"] == ["../cnn/model", "../bigru/model"]
    assert read_ensemble(ens).members == (cnn.resolve(), bigru.resolve())
    card = (ens / "README.md").read_text()
    assert "ensemble of 2" in card and "`../cnn/model`" in card and "Labels (3): ANG, HAP, SAD" in card
    assert "## Intended use and limits" in card and "Not evaluated yet" in card


def test_api_gives_the_mean_of_its_members(members, audio: Path) -> None:
    cnn, bigru, ens = members
    files = sorted(str(p) for p in audio.iterdir())
    want = (load(cnn).predict_proba(files) + load(bigru).predict_proba(files)) / 2
    for model in (ens, [cnn, bigru], [str(cnn), str(bigru)]):
        clf = load(model)
        got = clf.predict_proba(files)
        assert got.dtype == np.float32 and got.shape == (3, len(LABELS))
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        assert clf.model_id.startswith("ensemble@") and clf.labels == LABELS
    ranked = load(ens).predict(files[0])
    assert ranked[0]["label"] == LABELS[int(want[0].argmax())]
    with pytest.raises(ValueError, match="no single clip vector"):
        load(ens).embed(files)


def test_speaker_means_reach_the_speaker_normalised_member(members, audio: Path) -> None:
    cnn, bigru, ens = members
    files = sorted(str(p) for p in audio.iterdir())
    who = ["ann", "ann", "bob"]
    kw = {"speakers": who, "min_speaker_files": 1}
    want = (load(cnn).predict_proba(files, **kw) + load(bigru).predict_proba(files)) / 2
    np.testing.assert_allclose(load(ens).predict_proba(files, **kw), want, atol=1e-6, rtol=0)
    assert not np.allclose(want, load(ens).predict_proba(files), atol=1e-4)  # the mean did reach the CNN
    mean = load(ens).speaker_mean(files[:2])
    np.testing.assert_array_equal(mean, load(cnn).speaker_mean(files[:2]))
    bigru_only = load(write_ensemble(ens.parent / "bigru-only", [bigru]))
    with pytest.raises(ValueError, match="no member is speaker-normalised"):
        bigru_only.predict_proba(files[0], speaker=mean)


def test_label_takes_an_ensemble_folder_or_repeated_models(members, audio: Path, tmp_path: Path) -> None:
    cnn, bigru, ens = members
    cols = [f"prob_{lab}" for lab in LABELS]

    def run(*models: Path) -> pd.DataFrame:
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.parquet"
        args = ["label", str(audio), "--out", str(out), "--device", "cpu", "--mel-backend", "torchaudio"]
        result = CliRunner().invoke(main, [*args, *(a for m in models for a in ("--model", str(m)))])
        assert result.exit_code == 0, result.output
        return pd.read_parquet(out).sort_values(["path", "window_index"]).reset_index(drop=True)

    a, b, e, both = run(cnn), run(bigru), run(ens), run(cnn, bigru)
    np.testing.assert_allclose(e[cols].to_numpy(), (a[cols].to_numpy() + b[cols].to_numpy()) / 2, atol=1e-6)
    np.testing.assert_array_equal(both[cols].to_numpy(), e[cols].to_numpy())
    assert e.model_id.str.startswith("ensemble@").all() and (e.model_id == both.model_id).all()
    assert (e.scope == "window").sum() > 0  # the long file's windows are averaged too
    result = CliRunner().invoke(main, ["label", str(audio), "--model", str(ens), "--embeddings",
                                       "--out", str(tmp_path / "emb.parquet")])  # fmt: skip
    assert result.exit_code == 2 and "no single clip vector" in result.output, result.output


def test_evaluate_scores_the_mean_of_its_members(members, tmp_path: Path) -> None:
    cnn, bigru, ens = members
    write_cremad_like(tmp_path / "data", ["1001", "1002"], ["DFA"], emotions=tuple(LABELS))
    preds = {}
    for name, model in (("cnn", cnn), ("bigru", bigru), ("ensemble", ens)):
        args = ["evaluate", "--model", str(model), "--data", str(tmp_path / "data"), "--out", str(tmp_path / name),
                "--device", "cpu", *(["--perturb", "gain-20"] if name == "ensemble" else ["--no-perturb"])]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        preds[name] = pd.read_parquet(tmp_path / name / "predictions.parquet").sort_values("clip_id")
    cols = [f"prob_{lab}" for lab in LABELS]
    mean = (preds["cnn"][cols].to_numpy() + preds["bigru"][cols].to_numpy()) / 2
    np.testing.assert_allclose(preds["ensemble"][cols].to_numpy(), mean, atol=1e-6)
    assert set(preds["ensemble"].model) == {"ensemble"}
    assert list(preds["ensemble"].pred) == [LABELS[i] for i in mean.argmax(axis=1)]
    assert "ensemble:" in result.output
    table = pd.read_csv(tmp_path / "ensemble" / "tables" / "robustness.csv")  # each member and their mean
    assert {"cnn_ua", "bigru_ua", "ensemble_ua"} <= set(table.columns) and table.ensemble_ua.between(0, 1).all()


def test_export_averages_members_in_one_graph(members, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from sononet.export import example_inputs, normalised
    from sononet.models.saved import SavedModel

    cnn, bigru, ens = members
    result = CliRunner().invoke(main, ["export", "--model", str(ens), "--out", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert info["model"] == "ensemble" and len(info["members"]) == 2 and info["labels"] == LABELS
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    refs = [normalised(m.model, "mel", m.normalizer) for m in (SavedModel.load(cnn), SavedModel.load(bigru))]
    for batch in (1, 3):
        x, lengths = example_inputs("mel", FEATURES, batch)
        with torch.no_grad():
            want = torch.stack([r(x, lengths)[0] for r in refs]).mean(0).numpy()
        probs, logits = session.run(None, {"features": x.numpy(), "lengths": lengths.numpy()})
        np.testing.assert_allclose(probs, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.exp(logits), want, atol=1e-5, rtol=0)


def test_export_refuses_members_with_different_inputs(members, tmp_path: Path) -> None:
    cnn = members[0]
    wave = save_tiny(tmp_path / "w2v2" / "model", "wav2vec2")
    ens = write_ensemble(tmp_path / "mixed", [cnn, wave])
    result = CliRunner().invoke(main, ["export", "--model", str(ens), "--out", str(tmp_path / "onnx")])
    assert result.exit_code == 2, result.output
    assert "take different inputs" in result.output and str(wave.resolve()) in result.output
    assert not (tmp_path / "onnx" / "model.onnx").exists()


def _hostile(kind: str, root: Path, members: tuple[Path, Path, Path]) -> Path:
    """An ensemble folder broken in one way."""
    cnn = members[0]
    ens = root / "ens"
    ens.mkdir()
    rel = os.path.relpath(cnn, ens)
    doc: object = {"format": "sononet-ensemble", "format_version": 1, "members": [rel]}
    if kind == "not_json":
        (ens / ENSEMBLE_FILE).write_text("{'members': [")
        return ens
    if kind == "huge":
        (ens / ENSEMBLE_FILE).write_text(json.dumps({**doc, "members": [rel] * 200_000}))
        return ens
    if kind == "fifo_file":
        os.mkfifo(ens / ENSEMBLE_FILE)
        return ens
    if kind == "fifo_member":
        os.mkfifo(ens / "pipe")
    elif kind == "nested":
        write_ensemble(ens / "inner", [cnn])
    elif kind == "other_labels":
        save_bigru(root / "other" / "model", labels=["HAP", "ANG", "SAD"])  # same classes, another order
    elif kind == "no_config":
        (root / "empty").mkdir()
    elif kind == "bad_member_config":
        (root / "bad").mkdir()
        (root / "bad" / "config.json").write_text('{"model": "cnn", "model_config": {}, "meta": [1]}')
    doc = {
        "list": [rel],
        "members_string": {**doc, "members": rel},
        "members_int": {**doc, "members": [1]},
        "version_string": {**doc, "format_version": "1"},
        "newer": {**doc, "format_version": 99},
        "format": {**doc, "format": "pickle"},
        "unknown_key": {**doc, "loader": "__import__('os').system('id')"},
        "empty": {**doc, "members": []},
        "too_many": {**doc, "members": [f"m{i}" for i in range(100)]},
        "missing": {**doc, "members": ["no-such-model"]},
        "absolute": {**doc, "members": [str(cnn.resolve())]},
        "windows_absolute": {**doc, "members": ["C:\\models\\cnn"]},
        "twice": {**doc, "members": [rel, rel]},
        "fifo_member": {**doc, "members": ["pipe"]},
        "nested": {**doc, "members": [rel, "inner"]},
        "other_labels": {**doc, "members": [rel, "../other/model"]},
        "no_config": {**doc, "members": ["../empty"]},
        "bad_member_config": {**doc, "members": [rel, "../bad"]},
    }[kind]
    (ens / ENSEMBLE_FILE).write_text(json.dumps(doc))
    return ens


HOSTILE = {
    "not_json": "not valid JSON", "huge": "larger than", "fifo_file": "not a regular file", "list": "JSON object",
    "members_string": "list of folder paths", "members_int": "relative folder paths",
    "version_string": "format_version must be an integer", "newer": "reads up to 1", "format": "format must be",
    "unknown_key": "unknown key", "empty": "at least one member", "too_many": "at most 64",
    "missing": "is not a folder", "absolute": "absolute path", "windows_absolute": "absolute path",
    "twice": "listed twice", "fifo_member": "is not a folder", "nested": "itself an ensemble",
    "other_labels": "same order", "no_config": "config.json is missing", "bad_member_config": "no label list",
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_ensemble_folders_are_one_line_errors(kind: str, members, tmp_path: Path, audio: Path) -> None:
    ens = _hostile(kind, tmp_path, members)
    with pytest.raises((UserError, ValueError), match=HOSTILE[kind]) as e:
        load(ens)
    assert "\n" not in str(e.value)
    result = CliRunner().invoke(main, ["label", str(audio), "--model", str(ens), "--out", str(tmp_path / "l.parquet")])
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert HOSTILE[kind] in result.output and result.output.count("\n") == 1, result.output


def test_a_list_of_models_is_checked_as_an_ensemble(members, tmp_path: Path) -> None:
    cnn, bigru, ens = members
    with pytest.raises(UserError, match="itself an ensemble"):
        load([cnn, ens])
    other = save_bigru(tmp_path / "other" / "model", labels=["ANG", "HAP", "NEU"])
    with pytest.raises(ValueError, match="same order"):
        load([cnn, other])
    with pytest.raises(TypeError, match="list of model folders"):
        load([cnn, 3])
    with pytest.raises(UserError, match="holds a saved model"):
        write_ensemble(cnn, [cnn, bigru])


def test_train_all_writes_an_ensemble_of_the_models_that_scored_the_test_split(tmp_path: Path) -> None:
    from sononet.corpus.splits import SplitConfig
    from sononet.evaluate.robustness import RobustnessConfig
    from sononet.experiment import ExperimentConfig, run_experiment
    from sononet.prepare import PrepareConfig
    from sononet.train.config import TrainConfig

    write_cremad_like(tmp_path / "data", [str(3001 + i) for i in range(7)], ["DFA"], emotions=tuple(LABELS))
    cfg = ExperimentConfig(
        out=str(tmp_path / "run"), models=("cnn", "bigru"), device="cpu", jobs=1,
        prepare=PrepareConfig(data=str(tmp_path / "data"), shard_size=40, mel_backend="torchaudio", device="cpu"),
        train=TrainConfig(epochs=1, batch_size=8, refit=True, tensorboard=False), split=SplitConfig(folds=1),
        robustness=RobustnessConfig(perturb=()),
    )  # fmt: skip
    run = Path(run_experiment(cfg, progress=False)["out"])
    doc = json.loads((run / "ensemble" / ENSEMBLE_FILE).read_text())
    assert doc["members"] == ["../cnn/refit/model", "../bigru/refit/model"]
    card = (run / "ensemble" / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    ua = metrics["models"]["ensemble"]["test"]["folds"]["0"]["ua"]["value"]
    assert "| test | " in card and f"{100 * ua:.1f} [" in card and "| val |" not in card
    clips = sorted(str(p) for p in (tmp_path / "data").glob("*.wav"))[:4]
    members = [load(run / m / "refit" / "model").predict_proba(clips) for m in ("cnn", "bigru")]
    np.testing.assert_allclose(load(run / "ensemble").predict_proba(clips), np.mean(members, axis=0), atol=1e-6)


def test_label_folder_job_takes_a_list_of_models(members, audio: Path, tmp_path: Path) -> None:
    """A job spec names an ensemble as a list of model folders (relative ones under the workdir):
    the same probabilities as the ensemble folder through `sononet label`."""
    import shutil

    from sononet.cli.batch import cli

    cnn, bigru, ens = members
    for member in (cnn, bigru):
        shutil.copytree(member, tmp_path / "models" / member.parent.name)
    cols = [f"prob_{lab}" for lab in LABELS]
    result = CliRunner().invoke(cli, [
        "label-folder", "--set", 'model=["models/cnn", "models/bigru"]', "--set", f"input={audio}",
        "--set", "mel_backend=torchaudio", "--set", "device=cpu", "--out", str(tmp_path),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    job = pd.read_parquet(next((tmp_path / "labels").glob("*.parquet"))).sort_values(["path", "window_index"])
    folder = tmp_path / "ens.parquet"
    args = ["label", str(audio), "--model", str(ens), "--out", str(folder), "--device", "cpu"]
    assert CliRunner().invoke(main, [*args, "--mel-backend", "torchaudio"]).exit_code == 0
    ref = pd.read_parquet(folder).sort_values(["path", "window_index"])
    np.testing.assert_array_equal(job[cols].to_numpy(), ref[cols].to_numpy())
    assert (job.model_id.to_numpy() == ref.model_id.to_numpy()).all()
