"""Benchmark 5: training steps per second for each model, alone and beside a CPU hog.

One step is what the training loop does per batch: forward with labels, backward, gradient
clipping, AdamW. Inputs are (B, 128, 94) log-mel for the CNN and BiGRU and (B, 48000) 16 kHz
waveform for wav2vec2; bf16 autocast on CUDA as in the loop. A few warm steps (allocator,
cuDNN autotuning) are excluded; the median step time of the timed steps is reported.

On the CPU the same steps run again beside a hog of as many busy processes as torch has
intra-op threads, the machine another job shares it with. Wall time then has to grow; what
should not is this process's CPU time per step (``time.process_time``, every thread): if it
does, threads burn CPU waiting for each other (spinning at barriers while a core is taken).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

from sononet.bench.timing import cpu_hog

log = logging.getLogger(__name__)
N_CLASSES = 6  # CREMA-D's emotions
HOG_SLACK_S = 60.0  # the hog's own time limit: this plus 20x the quiet time of the contended steps


def _overrides(name: str, w2v2: str) -> dict:
    if name != "wav2vec2":
        return {}
    return {"tiny": True} if w2v2 == "tiny" else {"backbone": w2v2}


def timed_steps(step: Callable[[], None], steps: int, sync: Callable[[], None]) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds of each of ``steps`` calls of ``step``."""
    wall, cpu = [], []
    for _ in range(steps):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def contended_steps(
    step: Callable[[], None], warmup: int, steps: int, width: int, quiet_s: float
) -> tuple[list[float], list[float]]:
    """``timed_steps`` beside ``width`` busy processes (after ``warmup`` steps there, untimed)."""
    with cpu_hog(width, HOG_SLACK_S + 20 * (warmup + steps) * quiet_s) as hog:
        for _ in range(warmup):
            step()
        wall, cpu = timed_steps(step, steps, lambda: None)
        if any(p.poll() is not None for p in hog):  # its time limit ran out: not contended throughout
            raise RuntimeError("the CPU hog ended before the contended steps did")
    return wall, cpu


def bench_model(
    name: str, device: str, batch: int, warmup: int, steps: int, w2v2: str = "tiny", contention: bool = True
) -> dict:
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
    times, cpu = timed_steps(step, steps, (lambda: torch.cuda.synchronize(dev)) if on_cuda else (lambda: None))
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
        "cpu_s_per_step": statistics.median(cpu),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if on_cuda else None,
    }
    if contention and not on_cuda:
        width = torch.get_num_threads()
        times, cpu = contended_steps(step, warmup, steps, width, median)
        hog_median, hog_cpu = statistics.median(times), statistics.median(cpu)
        row |= {
            "hog_processes": width,
            "contended_steps_per_s": 1.0 / hog_median,
            "contended_median_s": hog_median,
            "contended_cpu_s_per_step": hog_cpu,
            "cpu_s_ratio_contended": hog_cpu / row["cpu_s_per_step"],
        }
        log.info("train %s beside a %d-process hog: CPU-s per step x%.2f", name, width, row["cpu_s_ratio_contended"])
    log.info("train %s on %s: %.2f steps/s", name, device, row["steps_per_s"])
    return row


def run_train(
    models: tuple[str, ...], devices: list[str], batch: int, warmup: int, steps: int, w2v2: str, contention: bool = True
) -> dict:
    rows = [bench_model(m, d, batch, warmup, steps, w2v2, contention) for d in devices for m in models]
    return {
        "rows": rows,
        "note": "random inputs; wav2vec2 is the random-init tiny encoder unless w2v2 names weights; "
        "contended rows (CPU only) run beside a hog of as many busy processes as torch has threads",
    }
