"""Benchmark 6: ``sononet label`` throughput and peak memory at two folder sizes.

A freshly initialised CNN is saved the way training saves it (weights, config, labels,
feature config, normalisation), then ``python -m sononet label`` runs in a child process on
folders of CREMA-D-length WAVs. The weights are untrained: the model's predictions are
meaningless, its cost per file is the real one. Peak RSS is the child's own; with parts of
a fixed number of files it should not grow with the folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from sononet.bench.corpus import cremad_like, write_wavs
from sononet.bench.timing import run_sononet

log = logging.getLogger(__name__)


def save_untrained_cnn(directory: Path) -> Path:
    import torch

    from sononet.corpus.cremad import EMOTIONS
    from sononet.features.mel import FeatureConfig
    from sononet.models.registry import build_model
    from sononet.models.saving import save_model

    torch.manual_seed(0)
    feats = FeatureConfig()
    model = build_model("cnn", n_classes=len(EMOTIONS), n_mels=feats.n_mels)
    meta = {
        "labels": list(EMOTIONS),
        "feature_config": feats.to_dict(),
        "input_kind": "mel",
        "norm": {"mean": [0.0] * feats.n_mels, "std": [1.0] * feats.n_mels},
        "protocol": "benchmark only: untrained weights",
    }
    return save_model(directory, model, "cnn", meta)


def label_once(n_files: int, model: Path, device: str, workers: int, tmp: Path) -> dict:
    from sononet.label import summary_path

    data, out = tmp / f"label-in-{n_files}", tmp / f"label-{n_files}.parquet"
    write_wavs(data, cremad_like(n_files), seed=3)
    command = [
        "label",
        str(data),
        "--model",
        str(model),
        "--out",
        str(out),
        "--device",
        device,
        "--workers",
        str(workers),
    ]
    child = run_sononet(command, tmp / f"label-{n_files}.log")
    summary = json.loads(summary_path(out).read_text())
    result = {
        "files": n_files,
        "files_labelled": summary.get("files"),
        "error_files": summary.get("error_files"),
        "wall_s": child.wall_s,
        "label_s": summary.get("seconds"),  # label's own timer, after imports and model load
        "files_per_s": n_files / child.wall_s,
        "peak_rss_mb": child.peak_rss_mb,
        "device": summary.get("device"),
        "mel_backend": summary.get("mel_backend"),
        "command": " ".join(command),
    }
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(out.with_suffix(".parts"), ignore_errors=True)
    out.unlink(missing_ok=True)
    return result


def run_label(sizes: tuple[int, ...], device: str, workers: int, tmp: Path) -> dict:
    model = save_untrained_cnn(tmp / "label-model" / "model")
    rows = [label_once(n, model, device, workers, tmp) for n in sizes]
    result: dict = {"rows": rows, "model": "cnn (untrained weights)"}
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        if b["wall_s"] > a["wall_s"]:  # else the timer noise swamps the difference
            result["marginal_files_per_s"] = (b["files"] - a["files"]) / (b["wall_s"] - a["wall_s"])
        result["rss_ratio"] = b["peak_rss_mb"] / a["peak_rss_mb"]
    return result
