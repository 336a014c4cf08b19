"""Formats libsndfile cannot read decode through PyAV: m4a/AAC, Opus, WebM, the audio track of MP4.

Each file is generated here with PyAV's own encoders (the wheel ships FFmpeg), so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_label import save_tiny

from sononet.audio import AudioConfig, load_audio, probe
from sononet.errors import AudioError
from sononet.label import LabelConfig, label, list_inputs

av = pytest.importorskip("av")

F0 = 440.0
# name -> (container, audio codec, codec rate, with a video track)
FORMATS = {
    "speech.m4a": ("mp4", "aac", 44_100, False),
    "speech.aac": ("adts", "aac", 44_100, False),
    "speech.opus": ("ogg", "libopus", 48_000, False),
    "speech.webm": ("webm", "libopus", 48_000, False),
    "video.mp4": ("mp4", "aac", 44_100, True),
}


def sine(seconds: float, sr: int = 44_100) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * F0 * t)).astype(np.float32)
    return np.stack([x, 0.5 * x])  # (2, time): stereo


def encode(path: Path, container: str, codec: str, rate: int, video: bool, seconds: float) -> None:
    """Write a stereo 440 Hz tone (plus a tiny video track for MP4) with PyAV."""
    x = sine(seconds)
    with av.open(str(path), "w", format=container) as out:
        if video:
            vs = out.add_stream("mpeg4", rate=10)
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout="stereo")
        frame.sample_rate = 44_100
        resampler = av.AudioResampler(
            format=stream.codec_context.format, layout="stereo", rate=rate, frame_size=stream.codec_context.frame_size
        )
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))
        if video:
            for i in range(int(seconds * 10)):
                img = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 8 % 255, np.uint8), format="rgb24")
                out.mux(vs.encode(img))
            out.mux(vs.encode(None))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    for name, (container, codec, rate, video) in FORMATS.items():
        encode(root / name, container, codec, rate, video, seconds=2.0)
    container, codec, rate, video = FORMATS["speech.m4a"]
    encode(root / "long.m4a", container, codec, rate, video, seconds=8.0)
    data = (root / "speech.m4a").read_bytes()
    (root / "cut.m4a").write_bytes(data[: len(data) // 3])
    (root / "notes.m4a").write_text("not audio at all " * 40)
    return root


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_decodes(folder: Path, name: str) -> None:
    dec = load_audio(folder / name, AudioConfig())
    assert dec.orig_channels == 2 and "downmixed" in dec.flags and "resampled" in dec.flags
    assert dec.duration_s == pytest.approx(2.0, abs=0.1)
    assert dec.samples.shape[0] == pytest.approx(32_000, abs=1_600)  # 16 kHz mono, codec padding allowed
    spectrum = np.abs(np.fft.rfft(dec.samples[4_000:20_000]))
    assert np.fft.rfftfreq(16_000, 1 / 16_000)[spectrum.argmax()] == pytest.approx(F0, abs=2)
    rms = float(np.sqrt(np.mean(dec.samples[4_000:20_000] ** 2)))
    assert rms == pytest.approx(0.75 * 0.3 / np.sqrt(2), rel=0.1)  # the downmix of x and x/2


def test_unreadable_files_keep_a_reason(folder: Path) -> None:
    with pytest.raises(AudioError) as info:
        probe(folder / "notes.m4a")
    assert info.value.reason == "unsupported_format"
    try:
        load_audio(folder / "cut.m4a", AudioConfig())
    except AudioError as e:  # FFmpeg may decode a prefix of a cut file; if it cannot, it says why
        assert e.reason in ("corrupt", "unsupported_format", "empty_audio")


def test_label_gives_every_file_a_row(folder: Path, tmp_path: Path) -> None:
    files, ignored = list_inputs(folder)
    assert len(files) == len(FORMATS) + 3 and ignored == 0
    model = save_tiny(tmp_path / "cnn" / "model")
    out = tmp_path / "labels.parquet"
    summary = label(LabelConfig(input=str(folder), model=str(model), out=str(out), device="cpu",
                                mel_backend="torchaudio"), progress=False)  # fmt: skip
    assert summary["ignored_non_audio"] == 0
    df = pd.read_parquet(out)
    rows = df[df.scope == "file"].set_index(df[df.scope == "file"].path.map(lambda p: Path(p).name))
    assert len(rows) == len(files)
    for name in [*FORMATS, "long.m4a"]:
        assert rows.loc[name, "status"] == "ok", rows.loc[name, "error_detail"]
    assert rows.loc["notes.m4a", "error_reason"] == "unsupported_format"
    assert rows.loc["long.m4a", "n_windows"] == 3  # 8 s streamed in 3-s windows: 0, 3 and the last at ~5 s
    assert rows.loc["speech.webm", "orig_sr"] == 48_000 and rows.loc["video.mp4", "orig_channels"] == 2


def test_audiofolder_corpus_lists_them(folder: Path, tmp_path: Path) -> None:
    from sononet.corpus.folder import load_audiofolder

    (tmp_path / "HAP").mkdir()
    for name in FORMATS:
        (tmp_path / "HAP" / name).symlink_to(folder / name)
    corpus = load_audiofolder(tmp_path)
    assert len(corpus.clips) == len(FORMATS) and not corpus.errors
