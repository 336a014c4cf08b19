"""EmotionClassifier: the same numbers as `sononet label`, arrays like files, one exception type for bad input."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from test_label import FEATURES, LABELS, save_tiny, tone

from sononet import AudioError, EmotionClassifier, SyntheticModelWarning
from sononet.label import LabelConfig, label

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("api") / "cnn" / "model")


@pytest.fixture(scope="module")
def clf(model_dir: Path) -> EmotionClassifier:
    return EmotionClassifier.load(model_dir, device="cpu", mel_backend="torchaudio")


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-audio")
    sf.write(root / "a8k.wav", tone(1.5, 8_000, f0=120), 8_000, subtype="PCM_16")
    sf.write(root / "b44k.flac", tone(2.5, 44_100, f0=220), 44_100)
    sf.write(root / "c_stereo.wav", tone(2.0, channels=2, f0=260), 16_000, subtype="FLOAT")
    sf.write(root / "d_long.wav", tone(10.0, 22_050, seed=1), 22_050)
    return root


def test_predict_equals_label_exactly(clf: EmotionClassifier, model_dir: Path, audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.parquet"
    cfg = LabelConfig(input=str(audio), model=str(model_dir), out=str(out), device="cpu", mel_backend="torchaudio")
    label(cfg, progress=False)
    rows = pd.read_parquet(out).query("scope == 'file'").sort_values("path")
    files = sorted(str(p) for p in audio.iterdir())
    assert list(rows.path) == files
    want = rows[[f"prob_{lab}" for lab in LABELS]].to_numpy()
    got = clf.predict_proba(files)
    assert got.dtype == np.float32 and np.array_equal(got, want)  # bit for bit: one code path
    ranked = clf.predict(files)
    assert [r[0]["label"] for r in ranked] == list(rows.pred)
    assert [r[0]["score"] for r in ranked] == pytest.approx(list(rows.confidence), rel=1e-6)


def test_predict_shapes_and_order(clf: EmotionClassifier, audio: Path) -> None:
    one = clf.predict(audio / "a8k.wav")
    assert [d["label"] for d in one] != [] and {d["label"] for d in one} == set(LABELS)
    scores = [d["score"] for d in one]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    two = clf.predict([str(audio / "a8k.wav"), audio / "b44k.flac"], top_k=2)
    assert len(two) == 2 and all(len(r) == 2 for r in two)
    # Batched with another clip: the same ranking, scores equal to float precision (oneDNN may block differently).
    assert [d["label"] for d in two[0]] == [d["label"] for d in one[:2]]
    assert [d["score"] for d in two[0]] == pytest.approx([d["score"] for d in one[:2]], rel=1e-5)
    assert clf.predict([]) == [] and clf.predict_proba([]).shape == (0, len(LABELS))


def test_arrays_and_tensors_match_files(clf: EmotionClassifier, tmp_path: Path) -> None:
    x = tone(2.0, 44_100, channels=2, f0=200).T.copy()  # (2, time) at 44.1 kHz
    sf.write(tmp_path / "x.wav", x.T, 44_100, subtype="FLOAT")
    from_file = clf.predict_proba(tmp_path / "x.wav")
    np.testing.assert_array_equal(clf.predict_proba(x, sample_rate=44_100), from_file)
    np.testing.assert_array_equal(clf.predict_proba(torch.from_numpy(x), sample_rate=44_100), from_file)
    mono16 = tone(1.2, f0=150)
    both = clf.predict_proba([mono16, x[0]], sample_rate=16_000)  # one rate for every array in the list
    assert both.shape == (2, len(LABELS))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: np.zeros(16_000, np.float32), "silent"),
        (lambda d: tone(0.1), "too_short"),
        (lambda d: np.full(16_000, np.nan, np.float32), "non_finite"),
        (lambda d: tone(1.0, channels=2), "unsupported_format"),  # (time, channels): the hint says pass x.T
        (lambda d: np.zeros((0,), np.float32), "empty_audio"),
        (lambda d: str(d / "gone.wav"), "missing"),
        (lambda d: (d / "text.wav").write_text("not audio") and str(d / "text.wav"), "unsupported_format"),
    ],
)
def test_bad_input_raises_audio_error_with_reason(clf, tmp_path: Path, make, reason: str) -> None:
    with pytest.raises(AudioError) as info:
        clf.predict([tone(1.0), make(tmp_path)], sample_rate=16_000)
    assert info.value.reason == reason
    assert "<array 1>" in str(info.value) or str(tmp_path) in str(info.value)  # names the bad input


def test_api_misuse_is_a_plain_error(clf: EmotionClassifier) -> None:
    with pytest.raises(ValueError, match="pass sample_rate="):
        clf.predict(tone(1.0))
    with pytest.raises(TypeError, match="expected a path, array or tensor"):
        clf.predict([{"audio": 1}])
    with pytest.raises(ValueError, match="window_s >= 1.0"):
        clf.predict_windows(tone(5.0), window_s=0.5, sample_rate=16_000)


def test_predict_windows_match_label_window_rows(clf, model_dir: Path, audio: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.parquet"
    cfg = LabelConfig(input=str(audio / "d_long.wav"), model=str(model_dir), out=str(out), device="cpu",
                      mel_backend="torchaudio", hop_s=1.5)  # fmt: skip
    label(cfg, progress=False)
    want = pd.read_parquet(out).query("scope == 'window'").reset_index(drop=True)
    got = clf.predict_windows(audio / "d_long.wav", window_s=3, hop_s=1.5)
    assert list(got.columns) == ["start_s", "end_s", "pred", "confidence", *[f"prob_{lab}" for lab in LABELS]]
    np.testing.assert_allclose(got.start_s, [0, 1.5, 3, 4.5, 6, 7])  # the last window ends at 10 s
    cols = ["start_s", "end_s", "pred", *[f"prob_{lab}" for lab in LABELS]]
    pd.testing.assert_frame_equal(got[cols], want[cols], check_dtype=False)
    short = clf.predict_windows(tone(1.5), sample_rate=16_000)
    assert len(short) == 1 and short.end_s.iloc[0] == pytest.approx(1.5)


def test_embed_and_label_embeddings_column(clf, model_dir: Path, audio: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sononet.features.shards import tensor_numpy

    files = sorted(str(p) for p in audio.iterdir())
    emb = clf.embed(files)
    dim = clf._lab.embedding_dim()
    assert emb.shape == (4, dim) and emb.dtype == np.float32 and np.isfinite(emb).all()
    (tmp_path / "in").mkdir()
    for p in files:
        (tmp_path / "in" / Path(p).name).symlink_to(p)
    (tmp_path / "in" / "zero.wav").write_bytes(b"")
    out = tmp_path / "e.parquet"
    cfg = LabelConfig(input=str(tmp_path / "in"), model=str(model_dir), out=str(out), device="cpu",
                      mel_backend="torchaudio", embeddings=True)  # fmt: skip
    label(cfg, progress=False)
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.fixed_shape_tensor(pa.float32(), [dim])
    df = table.drop(["embedding"]).to_pandas()
    col = table["embedding"]
    nan_rows = np.isnan(tensor_numpy(col)).all(axis=1)
    assert df.status[nan_rows].tolist() == ["error"] and not np.isnan(tensor_numpy(col)[~nan_rows]).any()
    mask = ((df.scope == "file") & (df.status == "ok")).to_numpy()
    ok = df[mask]
    assert sorted(ok.path) == files  # symlinks resolved: rows store the real paths
    vectors = tensor_numpy(table["embedding"].filter(pa.array(mask)))
    np.testing.assert_array_equal(vectors[np.argsort(ok.path.to_numpy())], emb)


def test_demo_trained_model_warns_and_says_so(tmp_path: Path, audio: Path) -> None:
    model_dir = save_tiny(tmp_path / "demo" / "cnn" / "model")
    cfg_path = model_dir / "config.json"
    doc = cfg_path.read_text().replace('"input_kind"', '"protocol": {"corpus": "demo (synthetic)", '
                                       '"split": "speaker-disjoint"}, "input_kind"', 1)  # fmt: skip
    cfg_path.write_text(doc)
    with pytest.warns(SyntheticModelWarning, match="synthetic demo corpus"):
        clf = EmotionClassifier.load(model_dir, device="cpu", mel_backend="torchaudio")
    assert re.fullmatch(r"cnn@[0-9a-f]{12}/demo-synthetic/scratch", clf.model_id)
    assert clf.provenance["corpus"] == "demo (synthetic)" and clf.provenance["pretrained"] is False
    out = tmp_path / "d.parquet"
    summary = label(LabelConfig(input=str(audio / "a8k.wav"), model=str(model_dir), out=str(out), device="cpu",
                                mel_backend="torchaudio"), progress=False)  # fmt: skip
    assert "synthetic demo corpus" in summary["warning"]
    row = pd.read_parquet(out).iloc[0]
    assert row.model_id == clf.model_id and row.train_corpus == "demo (synthetic)" and not row.pretrained
    assert row.train_split == "speaker-disjoint"


def test_no_warning_for_real_corpus_models(model_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntheticModelWarning)
        clf = EmotionClassifier.load(model_dir, device="cpu", mel_backend="torchaudio")
    assert clf.model_id.endswith("/unknown/scratch") and "cnn@" in repr(clf)


def test_import_sononet_stays_light() -> None:
    code = "import sys, sononet; assert 'torch' not in sys.modules and 'pyarrow' not in sys.modules; sononet.AudioError"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.checkout  # reads the repository, not the installed package
@pytest.mark.parametrize(("page", "after"), [("README.md", "## Use from Python"), ("docs/api.md", "# The Python API")])
def test_readme_example_runs(page: str, after: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's and docs/api.md's Python blocks, run as written in a folder holding the files they name."""
    text = (ROOT / page).read_text()
    section = text.split(after, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    save_tiny(tmp_path / "runs" / "demo" / "cnn" / "model")
    (tmp_path / "results").symlink_to(ROOT / "results")  # the shipped model, results/models/ravdess-6
    sf.write("clip.wav", tone(2.5, 44_100, f0=200), 44_100)
    sf.write("long.wav", tone(8.0, seed=2), 16_000)
    Path("spk1").mkdir()
    for i, name in enumerate("abc"):
        sf.write(f"spk1/{name}.wav", tone(2.0, f0=120 + 20 * i, seed=i), 16_000)
    assert FEATURES.sample_rate == 16_000
    exec(compile(code, page, "exec"), {})
