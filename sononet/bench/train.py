"""Benchmark 5: training steps per second for each model, on random inputs of the real shapes.

One step is what the training loop does per batch: forward with labels, backward, gradient
clipping, AdamW. Inputs are (B, 128, 94) log-mel for the CNN and BiGRU and (B, 48000) 16 kHz
waveform for wav2vec2; bf16 autocast on CUDA as in the loop. A few warm steps (allocator,
cuDNN autotuning) are excluded; the median step time of the timed steps is reported.
"""

from __future__ import annotations

import logging
import statistics
import time

log = logging.getLogger(__name__)
N_CLASSES = 6  # CREMA-D's emotions


def _overrides(name: str, w2v2: str) -> dict:
    if name != "wav2vec2":
        return {}
    return {"tiny": True} if w2v2 == "tiny" else {"backbone": w2v2}


def bench_model(name: str, device: str, batch: int, warmup: int, steps: int, w2v2: str = "tiny") -> dict:
    import torch

    from sononet.features.mel import FeatureConfig
    from sononet.models.registry import MODELS, build_model

    dev = torch.device(device)
    feats = FeatureConfig()
    torch.manual_seed(0)
    model = build_model(name, n_classes=N_CLASSES, **_overrides(name, w2v2)).to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=getattr(model.config, "lr", 1e-3))
    if MODELS[name].input_kind == "mel":
        x = torch.randn(batch, feats.n_mels, feats.n_frames, device=dev)  # (B, 128, 94)
        lengths = torch.full((batch,), feats.n_frames, device=dev)
    else:
        x = 0.1 * torch.randn(batch, feats.clip_samples, device=dev)  # (B, 48000)
        lengths = torch.full((batch,), feats.clip_samples, device=dev)
    labels = torch.randint(0, N_CLASSES, (batch,), device=dev)
    on_cuda = dev.type == "cuda"
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=on_cuda)

    def step() -> None:
        with amp:
            _, loss = model(x, lengths, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    if on_cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if on_cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        step()
        if on_cuda:
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    row = {
        "model": name,
        "describe": model.describe(),
        "device": device,
        "batch": batch,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_m": sum(p.numel() for p in params) / 1e6,
        "steps_per_s": 1.0 / median,
        "clips_per_s": batch / median,
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "repeats": steps,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if on_cuda else None,
    }
    log.info("train %s on %s: %.2f steps/s", name, device, row["steps_per_s"])
    return row


def run_train(models: tuple[str, ...], devices: list[str], batch: int, warmup: int, steps: int, w2v2: str) -> dict:
    rows = [bench_model(m, d, batch, warmup, steps, w2v2) for d in devices for m in models]
    return {
        "rows": rows,
        "note": "random inputs; wav2vec2 is the random-init tiny encoder unless w2v2 names weights",
    }
