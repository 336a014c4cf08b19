"""Benchmark 3: decode + mix + resample throughput through ``sononet.audio.load_audio``.

Two folders of CREMA-D-length WAVs: 16 kHz mono (CREMA-D itself, no resampling) and
44.1 kHz stereo (a typical recording: downmix + soxr HQ resample to 16 kHz). Each is read
the way ``prepare`` reads it (``max_samples`` = one 3 s clip, centre kept), once on one
thread and once on a thread pool of ``workers`` (soundfile and soxr release the GIL).
Files are freshly written, so the page cache is warm: this is CPU cost, not disk speed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sononet.bench.timing import time_call
from sononet.corpus.cremad import SAMPLE_RATE

FORMATS = {"16 kHz mono": (SAMPLE_RATE, 1), "44.1 kHz stereo": (44_100, 2)}


def run_decode(n_files: int, repeats: int, workers: int, tmp: Path) -> dict:
    from sononet.audio import AudioConfig, load_audio
    from sononet.bench.corpus import cremad_like, write_wavs
    from sononet.features.mel import FeatureConfig

    audio, feats = AudioConfig(), FeatureConfig()
    specs = cremad_like(n_files)
    audio_seconds = sum(s.seconds for s in specs)
    rows = []
    for i, (label, (sr, channels)) in enumerate(FORMATS.items()):
        paths = write_wavs(tmp / f"decode-{sr}-{channels}", specs, sr=sr, channels=channels, seed=i)

        def one(path: Path) -> int:
            return load_audio(path, audio, max_samples=feats.clip_samples, keep=feats.trim).samples.shape[0]

        def serial(paths: list[Path] = paths) -> None:
            for p in paths:
                one(p)

        with ThreadPoolExecutor(max_workers=workers) as pool:

            def pooled(paths: list[Path] = paths, pool: ThreadPoolExecutor = pool) -> None:
                list(pool.map(one, paths))

            for threads, fn in ((1, serial), (workers, pooled)):
                t = time_call(fn, repeats)
                rows.append(
                    {
                        "input": label,
                        "threads": threads,
                        "clips_per_s": len(paths) / t.median_s,
                        "audio_s_per_s": audio_seconds / t.median_s,
                        **t.to_dict(),
                    }
                )
    return {"files": n_files, "mean_duration_s": audio_seconds / n_files, "rows": rows}
