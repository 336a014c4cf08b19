"""Labelling folders: every file gets a status, long files stream in windows, shards merge, runs resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from sononet import label as label_mod
from sononet.audio import AudioConfig, load_audio
from sononet.errors import UserError
from sononet.features.mel import FeatureConfig, LogMel
from sononet.label import LabelConfig, label, list_inputs, merge, parse_shard, resolve_shard, stream_windows
from sononet.label import run as label_run
from sononet.models.registry import build_model
from sononet.models.saving import save_model

torch.set_num_threads(1)
LABELS = ["ANG", "HAP", "SAD"]
# Small features keep the tests fast; labelling must follow whatever the model was trained with.
FEATURES = FeatureConfig(n_fft=512, hop_length=256, n_mels=32)


def tone(seconds: float, sr: int = 16_000, channels: int = 1, f0: float = 150.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t * (1 + 0.1 * np.sin(t))) / k for k in range(1, 4)) * 0.1
    x = (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_folder(root: Path) -> dict[str, str | None]:
    """Good and bad inputs; value = expected error reason, None for a file that labels."""
    root.mkdir(parents=True)
    expected: dict[str, str | None] = {}

    def good(name: str, x: np.ndarray, sr: int, **kw) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, x, sr, **kw)
        expected[name] = None

    good("rate8k.wav", tone(1.5, 8_000, f0=120), 8_000, subtype="PCM_16")
    good("rate16k.flac", tone(2.0, f0=180), 16_000)
    good("rate44k.wav", tone(2.5, 44_100, f0=220), 44_100)
    good("stereo.wav", tone(2.0, channels=2, f0=260), 16_000)
    good("nested/deeper/clip.ogg", tone(1.0, f0=140), 16_000)
    good("long.wav", tone(40.0, 22_050, channels=2, seed=1), 22_050)  # streamed, resampled, downmixed
    (root / "zero.wav").write_bytes(b"")
    raw = (root / "rate16k.flac").read_bytes()
    sf.write(root / "ref.wav", tone(1.0), 16_000, subtype="PCM_16")
    wav = (root / "ref.wav").read_bytes()
    (root / "ref.wav").unlink()
    (root / "corrupt.wav").write_bytes(wav[:12] + b"fmt \xff\xff\xff\xff" + wav[20:64])
    (root / "truncated.wav").write_bytes(wav[: len(wav) // 2])
    (root / "text.wav").write_text("not audio, just text " * 20)
    (root / "cut.flac").write_bytes(raw[:40])
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 16_000)
    sf.write(root / "silent.wav", np.zeros(16_000, np.float32), 16_000)
    nan = tone(1.0)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 16_000, subtype="FLOAT")
    sf.write(root / "short.wav", tone(0.1), 16_000)
    sf.write(root / "long_silent.wav", np.zeros(5 * 16_000, np.float32), 16_000)
    long_nan = tone(5.0)
    long_nan[-1000] = np.nan  # after the first window was already yielded
    sf.write(root / "long_nan.wav", long_nan, 16_000, subtype="FLOAT")
    expected.update(
        {"zero.wav": "zero_byte", "corrupt.wav": "corrupt", "truncated.wav": "truncated",
         "text.wav": "unsupported_format", "empty.wav": "empty_audio", "silent.wav": "silent",
         "nan.wav": "non_finite", "short.wav": "too_short", "long_silent.wav": "silent",
         "long_nan.wav": "non_finite", "cut.flac": None}
    )  # fmt: skip
    (root / "README.md").write_text("not an input: unknown extension")
    (root / ".hidden.wav").write_bytes(b"")
    return expected


def save_tiny(directory: Path, name: str = "cnn", features: FeatureConfig = FEATURES) -> Path:
    torch.manual_seed(0)
    if name == "cnn":
        model = build_model("cnn", n_classes=3, n_mels=features.n_mels, channels=(4, 8), dropouts=(0.1, 0.1))
        # Speaker-normalised, as training saves by default: label subtracts the training speakers' average voice.
        default = np.linspace(-40.0, -20.0, FEATURES.n_mels).tolist()
        norm = {"mean": [0.5] * FEATURES.n_mels, "std": [15.0] * FEATURES.n_mels, "speaker": 1.0,
                "speaker_default": default}  # fmt: skip
        kind = "mel"
    else:
        model, norm, kind = build_model("wav2vec2", n_classes=3, tiny=True), {}, "wave"
    meta = {"labels": LABELS, "feature_config": features.to_dict(), "norm": norm, "input_kind": kind}
    return save_model(directory, model.eval(), name, meta)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    root = tmp_path_factory.mktemp("label") / "audio"
    return root, write_folder(root)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("model") / "cnn" / "model")


def norm_rows(df: pd.DataFrame) -> pd.DataFrame:
    # libsndfile's open-error text races between decode threads (a global buffer); the reason does not.
    return df.sort_values(["path", "window_index"]).reset_index(drop=True).drop(columns="error_detail")


def run(inp: Path | str, model: Path, out: Path, **kw) -> dict:
    cfg = LabelConfig(input=str(inp), model=str(model), out=str(out), mel_backend="torchaudio", device="cpu", **kw)
    return label(cfg, progress=False)


@pytest.fixture(scope="module")
def labelled(folder, model_dir, tmp_path_factory) -> tuple[pd.DataFrame, dict, Path]:
    out = tmp_path_factory.mktemp("out") / "labels.parquet"
    summary = run(folder[0], model_dir, out, part_size=7, batch_size=5)
    return pd.read_parquet(out), summary, out


def test_every_file_has_a_status(folder, labelled) -> None:
    root, expected = folder
    df, summary, out = labelled
    files = df[df.scope == "file"]
    assert len(files) == len(expected) == summary["files"]  # README.md and .hidden.wav are not inputs
    got = {str(Path(p).relative_to(root)): r for p, r in zip(files.path, files.error_reason)}
    want = {name: reason for name, reason in expected.items()}
    want["cut.flac"] = got["cut.flac"]  # a 40-byte FLAC: corrupt or unsupported, libsndfile decides
    assert got == want
    assert want["cut.flac"] in ("corrupt", "unsupported_format", "empty_audio")
    ok = files[files.status == "ok"]
    assert set(files.status) == {"ok", "error"} and ok.pred.isin(LABELS).all()
    probs = ok[[f"prob_{lab}" for lab in LABELS]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ok.confidence, probs.max(axis=1), rtol=1e-6)
    errors = files[files.status == "error"]
    assert errors.pred.isna().all() and errors.error_detail.notna().all()
    assert summary["ignored_non_audio"] == 2  # README.md and .hidden.wav
    saved = json.loads(out.with_suffix(".summary.json").read_text())
    assert saved["errors_by_reason"] == files.error_reason.dropna().value_counts().sort_index().to_dict()
    assert saved["error_files"] == len(errors) and saved["windows"] == ok.n_windows.sum()
    assert df.model_id.nunique() == 1 and df.model_id.iloc[0].startswith("cnn@")
    assert files.set_index("path").loc[str(root / "zero.wav"), "source_sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of b""
    )


def test_long_file_is_windowed_with_an_aggregate(folder, labelled) -> None:
    df, _, _ = labelled
    rows = df[df.path == str(folder[0] / "long.wav")]
    windows, agg = rows[rows.scope == "window"], rows[rows.scope == "file"]
    # 40 s in 3-s windows: starts 0, 3, ..., 36, then one aligned to the end at 37 s.
    assert list(windows.window_index) == list(range(14))
    np.testing.assert_allclose(windows.start_s, [*range(0, 39, 3), 37], atol=1e-3)
    np.testing.assert_allclose(windows.end_s - windows.start_s, 3.0, atol=1e-3)
    assert len(agg) == 1 and agg.n_windows.iloc[0] == 14 and agg.window_index.iloc[0] == -1
    cols = [f"prob_{lab}" for lab in LABELS]
    np.testing.assert_allclose(agg[cols].to_numpy()[0], windows[cols].mean().to_numpy(), rtol=1e-5)
    short = df[df.path == str(folder[0] / "rate8k.wav")]
    assert list(short.scope) == ["file"] and short.n_windows.iloc[0] == 1  # one padded window


def test_short_file_matches_the_training_feature_path(folder, model_dir, labelled) -> None:
    """Same decode -> pad/trim -> log-mel -> fp16 -> normalise -> model chain as prepare + training."""
    from sononet.kernels import pad_trim

    from sononet.features.normalize import normalize_mel
    from sononet.models.saving import load_model
    from sononet.prepare import featurize

    df, _, _ = labelled
    path = folder[0] / "rate44k.wav"
    wave = pad_trim([load_audio(path, AudioConfig()).samples], FEATURES.clip_samples, FEATURES.pad, FEATURES.trim)
    mel = featurize(wave, LogMel(FEATURES, "torchaudio"), torch.device("cpu"), 8).astype(np.float16)
    model, doc = load_model(model_dir)
    norm = doc["meta"]["norm"]
    x = torch.from_numpy(mel.astype(np.float32)) - torch.tensor(norm["speaker_default"])[:, None]  # speaker unknown
    x = normalize_mel(x, torch.tensor(norm["mean"]), torch.tensor(norm["std"]))
    frames = torch.tensor([-(-int(2.5 * 16_000) // FEATURES.hop_length)])
    with torch.no_grad():
        want = torch.softmax(model(x, frames)[0], dim=-1).numpy()[0]
    row = df[(df.path == str(path)) & (df.scope == "file")]
    # Equal to float precision here; skipping the fp16 storage rounding alone moves it by ~3e-6.
    np.testing.assert_allclose(row[[f"prob_{lab}" for lab in LABELS]].to_numpy()[0], want, rtol=1e-6, atol=1e-7)


def test_streamed_windows_equal_whole_file_decode(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", tone(10.0, seed=3), 16_000, subtype="FLOAT")
    sf.write(tmp_path / "b.wav", tone(10.0, 22_050, seed=4), 22_050, subtype="FLOAT")
    cfg = AudioConfig()
    for name, atol in (("a.wav", 0.0), ("b.wav", 2e-3)):
        src = label_mod.open_source(str(tmp_path / name), cfg, window_s=3.0)
        whole = load_audio(tmp_path / name, cfg).samples
        wins = list(stream_windows(src, 48_000, 24_000, cfg))  # 3-s windows every 1.5 s
        assert [s for s, _ in wins] == [0, 24_000, 48_000, 72_000, 96_000, 112_000]
        for start, clip in wins:
            assert clip.shape == (48_000,)
            np.testing.assert_allclose(clip, whole[start : start + 48_000], atol=atol)


def test_two_shards_merged_equal_one_run(folder, model_dir, labelled, tmp_path: Path) -> None:
    out = tmp_path / "sharded.parquet"
    first = run(folder[0], model_dir, out, shard_index=0, shard_count=2, part_size=4)
    assert first["shard"] == "0/2" and not out.exists()
    with pytest.raises(UserError, match=r"\[1\] never started"):
        merge(out)
    run(folder[0], model_dir, out, shard_index=1, shard_count=2, part_size=4)
    merged = run(folder[0], model_dir, out, merge=True)
    assert merged["files"] == labelled[1]["files"] and merged["shards"] == 2

    pd.testing.assert_frame_equal(norm_rows(pd.read_parquet(out)), norm_rows(labelled[0]), check_exact=False, rtol=1e-5)


def test_jobs_label_shards_in_processes_and_merge(folder, model_dir, labelled, tmp_path: Path, monkeypatch) -> None:
    """--jobs 2: two spawned workers take shards 0/2 and 1/2, the parent merges; a rerun keeps the count."""
    out = tmp_path / "jobs.parquet"
    summary = run(folder[0], model_dir, out, jobs=2, part_size=4)
    assert summary["shards"] == 2 and summary["files"] == labelled[1]["files"]
    pd.testing.assert_frame_equal(norm_rows(pd.read_parquet(out)), norm_rows(labelled[0]), check_exact=False, rtol=1e-5)
    assert label_run.label_jobs(LabelConfig(input=str(folder[0]), model=str(model_dir), out=str(out))) == 2
    monkeypatch.setattr(label_run, "thread_budget", lambda: 4)  # a 4-CPU machine
    new = LabelConfig(input=str(folder[0]), model=str(model_dir), out=str(tmp_path / "new.parquet"), device="cpu")
    assert label_run.label_jobs(new) == 1  # a handful of files: not worth a second process
    monkeypatch.setattr(label_run, "list_inputs", lambda _: ([f"{i}.wav" for i in range(5000)], 0))
    assert label_run.label_jobs(new) == 4  # one per CPU thread


def test_jobs_parent_never_loads_torch(folder, model_dir, tmp_path: Path) -> None:
    """The parent of --jobs workers lists, spawns and merges: torch and numba (over a second of
    start-up on the critical path) load in the workers only."""
    import subprocess
    import sys

    args = [str(folder[0]), "--model", str(model_dir), "--out", str(tmp_path / "p.parquet"), "--jobs", "2",
            "--threads", "2", "--device", "cpu", "--part-size", "4"]  # fmt: skip
    code = (
        "import sys\nfrom sononet.cli import main\n"
        f"try:\n    main(['label', *{args!r}], standalone_mode=False)\n"
        "finally:\n    print('loaded:', 'torch' in sys.modules, 'numba' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded: False False" in proc.stdout and (tmp_path / "p.parquet").exists()


def test_device_type_answers_cpu_without_torch_only_when_sure(monkeypatch) -> None:
    import sononet.device as device

    def no_torch(name: str) -> torch.device:
        raise AssertionError("resolve_device imports torch")

    monkeypatch.setattr(device, "resolve_device", no_torch)
    monkeypatch.setattr("glob.glob", lambda pattern: [])  # no GPU device nodes
    assert device.device_type("auto") == device.device_type("cpu") == "cpu"
    monkeypatch.setattr("glob.glob", lambda pattern: ["/dev/nvidia0"] if "nvidia" in pattern else [])
    with pytest.raises(AssertionError, match="imports torch"):  # a GPU may be there: torch decides
        device.device_type("auto")
    with pytest.raises(ValueError, match="device must be"):
        device.device_type("tpu")


class KilledError(Exception):
    pass


def test_resume_after_a_crash_redoes_only_missing_parts(folder, model_dir, labelled, tmp_path, monkeypatch) -> None:
    out = tmp_path / "resume.parquet"
    real = label_mod.label_files
    calls: list[int] = []
    crash = [True]

    def crashing(files, *args, **kw):
        calls.append(len(files))
        if crash[0] and len(calls) == 3:
            raise KilledError("killed while labelling the third part")
        return real(files, *args, **kw)

    monkeypatch.setattr(label_run, "label_files", crashing)  # where the job loop looks it up
    with pytest.raises(KilledError):
        run(folder[0], model_dir, out, part_size=4)
    n_parts = -(-labelled[1]["files"] // 4)
    state = json.loads((out.with_suffix(".parts") / "state-00000.json").read_text())
    assert sorted(state["parts"]) == ["0", "1"] and not state["complete"] and not out.exists()
    calls.clear()
    crash[0] = False
    summary = run(folder[0], model_dir, out, part_size=4)
    assert len(calls) == n_parts - 2  # the two finished parts were skipped
    parts = sorted(out.with_suffix(".parts").glob("part-*.parquet"))
    assert len(parts) == n_parts and summary["files"] == labelled[1]["files"]
    last_mtime = parts[-1].stat().st_mtime_ns
    parts[1].unlink()  # a lost part is redone too, and only it
    calls.clear()
    run(folder[0], model_dir, out, part_size=4)
    assert len(calls) == 1 and parts[-1].stat().st_mtime_ns == last_mtime
    got, want = pd.read_parquet(out), labelled[0]
    pd.testing.assert_frame_equal(norm_rows(got), norm_rows(want), check_exact=False, rtol=1e-5)


def test_changed_window_never_mixes_with_old_parts(folder, model_dir, labelled) -> None:
    with pytest.raises(ValueError, match="hop_samples"):
        run(folder[0], model_dir, labelled[2], part_size=7, batch_size=5, hop_s=1.5)


def test_folder_listing_gives_real_paths_through_links(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()  # a temp dir may itself sit under a link (macOS /var)
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    for name in ("a.wav", "sub/b.flac", "notes.txt"):
        (real / name).write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c.wav").write_bytes(b"x")
    (real / "c.wav").symlink_to(elsewhere / "c.wav")  # a linked file: listed as its target
    (real / "linked").symlink_to(elsewhere, target_is_directory=True)  # a linked folder: not walked
    (real / "loop.wav").symlink_to(real / "loop.wav")  # a loop keeps its own path (its row says why)
    (tmp_path / "via").symlink_to(real, target_is_directory=True)
    paths, ignored = list_inputs(tmp_path / "via")  # the folder itself reached through a link
    want = [str(real / "a.wav"), str(elsewhere / "c.wav"), str(real / "loop.wav"), str(real / "sub" / "b.flac")]
    assert paths == sorted(want) and ignored == 1


def test_inputs_from_lists_and_manifests(folder, model_dir, tmp_path: Path) -> None:
    root = folder[0]
    (tmp_path / "files.txt").write_text(f"# two files\n{root / 'stereo.wav'}\n\n{root / 'gone.wav'}\n")
    pd.DataFrame({"path": ["audio/rate8k.wav", "audio/zero.wav"]}).to_csv(root.parent / "m.csv", index=False)
    assert list_inputs(root.parent / "m.csv")[0] == [str(root / "rate8k.wav"), str(root / "zero.wav")]
    paths, ignored = list_inputs(root)
    assert ignored == 2 and all(Path(p).is_absolute() for p in paths) and paths == sorted(paths)
    summary = run(tmp_path / "files.txt", model_dir, tmp_path / "list.parquet")
    df = pq.read_table(tmp_path / "list.parquet").to_pandas()
    assert summary["files"] == 2 and dict(zip(df.path.map(lambda p: Path(p).name), df.status)) == {
        "stereo.wav": "ok", "gone.wav": "error",
    }  # fmt: skip
    assert df.error_reason.tolist().count("missing") == 1
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['path'\]; it needs path\. Found: \['file'\]"):
        pd.DataFrame({"file": ["x.wav"]}).to_csv(tmp_path / "bad.csv", index=False)
        list_inputs(tmp_path / "bad.csv")


def test_wave_model_labels_too(folder, tmp_path: Path) -> None:
    model = save_tiny(tmp_path / "w2v2", name="wav2vec2")
    (tmp_path / "two.txt").write_text(f"{folder[0] / 'stereo.wav'}\n{folder[0] / 'rate8k.wav'}\n")
    run(tmp_path / "two.txt", model, tmp_path / "w.parquet")
    df = pd.read_parquet(tmp_path / "w.parquet")
    assert (df.status == "ok").all() and df.model_id.str.startswith("wav2vec2@").all()  # the kind, not w2v2/
    np.testing.assert_allclose(df[[f"prob_{lab}" for lab in LABELS]].sum(axis=1), 1.0, rtol=1e-5)


def test_model_id_is_the_saved_kind_not_the_folder(folder, tmp_path: Path) -> None:
    """A refit model lives in <run>/cnn/refit/model: its rows say cnn@..., as the saved config does."""
    refit = save_tiny(tmp_path / "cnn" / "refit" / "model")
    run(folder[0] / "stereo.wav", refit, tmp_path / "r.parquet")
    ids = pd.read_parquet(tmp_path / "r.parquet").model_id
    assert ids.str.fullmatch(r"cnn@[0-9a-f]{12}/unknown/scratch").all(), ids.tolist()


def test_shard_from_flags_and_environment() -> None:
    assert parse_shard("2/8") == (2, 8)
    assert resolve_shard(None, None, {}) == (0, 1)
    assert resolve_shard(None, None, {"JOB_COMPLETION_INDEX": "3", "JOB_COMPLETIONS": "4"}) == (3, 4)
    assert resolve_shard(None, None, {"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert resolve_shard(5, 6, {"RANK": "1", "WORLD_SIZE": "2"}) == (5, 6)  # flags win
    for bad, match in (("8/8", r"Found: 8/8"), ("a/b", "i/n"), ("1", "i/n")):
        with pytest.raises(ValueError, match=match):
            parse_shard(bad)
    with pytest.raises(ValueError, match="JOB_COMPLETIONS"):
        resolve_shard(None, None, {"JOB_COMPLETION_INDEX": "0"})


def test_bad_settings_are_refused(folder, model_dir, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window_s >= 1.0"):
        run(folder[0], model_dir, tmp_path / "x.parquet", window_s=0.5)
    with pytest.raises(ValueError, match="0 < hop_s <= window_s"):
        run(folder[0], model_dir, tmp_path / "x.parquet", hop_s=4.0)
    with pytest.raises(ValueError, match="batch_size must be positive. Found: 0"):
        LabelConfig(input="x", model="y", batch_size=0)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        run(tmp_path / "nothing", model_dir, tmp_path / "y.parquet")
    with pytest.raises(FileNotFoundError, match="no label state"):
        merge(tmp_path / "never.parquet")


def test_cli(folder, model_dir, tmp_path: Path) -> None:
    from sononet.cli import main

    runner = CliRunner()
    out = tmp_path / "cli.parquet"
    args = ["label", str(folder[0] / "nested"), "--model", str(model_dir), "--out", str(out)]
    result = runner.invoke(main, [*args, "--mel-backend", "torchaudio", "--device", "cpu", "--shard", "0/1"])
    assert result.exit_code == 0, result.output
    assert "1 files -> 1 windows, 0 errors" in result.output and out.exists()
    result = runner.invoke(main, ["label", "--out", str(tmp_path / "none.parquet")])
    assert result.exit_code == 2 and "pass PATH and --model" in result.output
    result = runner.invoke(main, [*args, "--shard", "3/2"])
    assert result.exit_code == 2 and "Found: 3/2" in result.output
    assert "label" in runner.invoke(main, ["--help"]).output
