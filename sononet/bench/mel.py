"""Benchmark 1: log-mel throughput, librosa vs nnAudio vs torchaudio on the same batch.

Every backend gets the identical batch of 3 s clips and the same parameters (n_fft 2048,
hop 512, 128 Slaney mels, reflect-padded centred frames, power -> dB with a per-clip 80 dB
floor). librosa runs its batched (multichannel) ``melspectrogram`` on the CPU, its best case;
the torch backends run through :class:`sononet.features.mel.LogMel` on each device with the
batch already resident there. Warm-up calls are excluded and CUDA is synchronised.
"""

from __future__ import annotations

import logging

import numpy as np

from sononet.bench.timing import time_interleaved

log = logging.getLogger(__name__)


def librosa_logmel(batch: np.ndarray, cfg) -> np.ndarray:
    """(B, S) or (S,) float32 -> (B, n_mels, frames) or (n_mels, frames) dB, librosa's way with ``cfg``'s
    parameters: the reference both this benchmark and the parity test (``tests/test_parity.py``) use."""
    import librosa

    if batch.ndim == 1:
        return librosa_logmel(batch[None], cfg)[0]
    spec = librosa.feature.melspectrogram(
        y=batch,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        power=cfg.power,
        center=True,
        pad_mode="reflect",  # librosa >= 0.10 defaults to "constant"; ours reflects
        htk=False,
        norm="slaney",
    )  # (B, n_mels, frames)
    # power_to_db's top_db is relative to the peak of its whole input: one clip at a time.
    return np.stack([librosa.power_to_db(s, ref=1.0, amin=cfg.amin, top_db=cfg.top_db) for s in spec])


def make_batch(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """(n, samples) float32 of speech-like level (tone + noise), identical for every backend."""
    from sononet.bench.corpus import source_signal
    from sononet.features.mel import FeatureConfig

    rng, sr = np.random.default_rng(seed), FeatureConfig.sample_rate
    buf = source_signal(samples / sr + 8.0, sr, seed=seed)[:, 0].astype(np.float32) / 32768.0
    starts = rng.integers(0, buf.shape[0] - samples, size=n)
    return np.stack([buf[s : s + samples] for s in starts])


def run_mel(batches: tuple[int, ...], repeats: int, devices: list[str]) -> dict:
    """Per device and batch size, librosa and both torch backends take turns rep by rep
    (``time_interleaved``), so each speed-up is a ratio measured under the same load."""
    import torch

    from sononet.features.mel import BACKENDS, FeatureConfig, LogMel, pick_backend

    cfg = FeatureConfig()
    batches = tuple(sorted(set(batches)))  # smallest first: the per-clip librosa rate is the first row
    data = make_batch(max(batches), cfg.clip_samples)
    reference = librosa_logmel(data[:4], cfg)
    rows: list[dict] = []
    parity: dict[str, float] = {}
    chosen: dict[str, dict] = {}
    for dev in devices:
        device = torch.device(dev)
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        modules = {backend: LogMel(cfg, backend).to(device) for backend in BACKENDS}
        for backend, module in modules.items():
            out = module(torch.from_numpy(data[:4]).to(device)).cpu().numpy()
            parity[f"{backend}@{dev}"] = float(np.abs(out - reference).max())
        per_clip_base = None
        for b in batches:
            x = torch.from_numpy(data[:b]).to(device)  # (B, S), resident on the device
            fns = {"librosa": lambda b=b: librosa_logmel(data[:b], cfg)}
            fns |= {backend: (lambda m=m, x=x: m(x)) for backend, m in modules.items()}
            timings = time_interleaved(fns, repeats, sync=sync)
            librosa_rate = b / timings["librosa"].median_s
            per_clip_base = per_clip_base or librosa_rate  # librosa one batch of the smallest size
            for name, t in timings.items():
                rate = b / t.median_s
                if name == "librosa" and dev != devices[0]:
                    continue  # librosa is a CPU row; measured again beside each device only for the ratio
                rows.append(
                    {
                        "device": "cpu" if name == "librosa" else dev,
                        "backend": name,
                        "batch": b,
                        "clips_per_s": rate,
                        "speedup_vs_librosa": rate / librosa_rate,
                        "speedup_vs_librosa_per_clip": rate / per_clip_base,
                        **t.to_dict(),
                    }
                )
                log.info("mel %s on %s batch %d: %.0f clips/s", name, dev, b, rate)
        del modules
        name, rates = pick_backend("auto", device, cfg)
        chosen[dev] = {"backend": name, "auto_timing_clips_per_s": rates}
    return {
        "feature_config": cfg.to_dict(),
        "rows": rows,
        "chosen_backend": chosen,
        "max_abs_db_diff_vs_librosa": parity,  # on 4 clips: same parameters, same output
    }
