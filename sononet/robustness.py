"""The robustness suite's scoring: each test clip decoded, perturbed and scored as ``sononet label`` scores a file.

It sits beside :mod:`sononet.experiment` and :mod:`sononet.evaluation`, which run it, because it
needs the label front end; the configuration, the UA per condition and the tables are
:mod:`sononet.evaluate.robustness` (read its docstring for what the suite measures and costs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sononet import stopping
from sononet.evaluate.robustness import CLEAN, RobustnessConfig, suite_clips, ua_rows
from sononet.perturb import Perturbation, select

if TYPE_CHECKING:
    from sononet.audio import AudioConfig

log = logging.getLogger(__name__)


def run_suite(
    model_dirs: Mapping[str, str | Path], clips: pd.DataFrame, labels: Sequence[str], cfg: RobustnessConfig,
    device: str = "auto", progress: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """UA of each model and ensemble on ``clips``, clean and under each perturbation, speakers known and unknown.

    Args:
        model_dirs: table name -> saved model folder (all with the same labels).
        clips: clip_id, source_path, speaker, label (the true class, one of ``labels``).
        labels: the classes scored (a model's other classes are ignored, as cross-corpus does).

    Returns:
        One row per (perturbation, speakers, model): n (clips scored) and ua (0-1).
    """
    clips = suite_clips(clips, cfg.max_clips, cfg.seed)
    probs, model_labels = suite_probabilities(model_dirs, clips, cfg, device, progress)
    return ua_rows(probs, clips, labels, model_labels, list(model_dirs))


def suite_probabilities(
    model_dirs: Mapping[str, str | Path], clips: pd.DataFrame, cfg: RobustnessConfig, device: str = "auto",
    progress: bool = False,
) -> tuple[dict[tuple[str, str, str], dict[str, np.ndarray]], list[str]]:  # fmt: skip
    """((perturbation, speakers, model) -> clip_id -> (n_classes,) probabilities, the models' labels).

    Clips whose file cannot be decoded are left out (logged). One speaker at a time: its clips
    are decoded once, then each perturbation's windows are featurised once per feature path and
    scored by every model on it, with the speaker's mean (known) and the default (unknown).
    """
    from tqdm import tqdm

    from sononet.device import decode_workers
    from sononet.label.labeller import Labeller

    labs = {name: Labeller(d, device, "auto") for name, d in model_dirs.items()}
    paths: dict[tuple, list[str]] = {}  # one front end per feature path, shared by the models on it
    for name, lab in labs.items():
        paths.setdefault((lab.kind, lab.features.hash(), lab.mel_backend, astuple(lab.audio)), []).append(name)
    perts: list[Perturbation | None] = [None, *select(cfg.perturb)]
    probs: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    groups = list(clips.groupby(clips.speaker.fillna("").astype(str), sort=True))
    bar = tqdm(total=len(groups) * len(perts), desc="robustness", unit="speaker x pert", disable=not progress)
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        for _, group in groups:
            for names in paths.values():
                _score_group(group, [labs[n] for n in names], names, perts, cfg.seed, pool, probs)
            bar.update(len(perts))
    bar.close()
    return probs, next(iter(labs.values())).labels


def _decode(path: str, audio: AudioConfig) -> np.ndarray | None:
    """One clip at the model's audio config; None (logged) when it cannot be decoded."""
    from sononet.audio import load_audio
    from sononet.errors import AudioError

    try:  # a file past long_duration_s is scored on its central part
        return load_audio(path, audio, max_samples=int(audio.long_duration_s * audio.sample_rate)).samples
    except AudioError as e:
        log.warning("robustness: %s left out (%s)", path, e)
        return None


def _score_group(
    group: pd.DataFrame, labs: list, names: list[str], perts: list[Perturbation | None], seed: int,
    pool: ThreadPoolExecutor, probs: dict,
) -> None:  # fmt: skip
    """One speaker's clips through one feature path: clean and each perturbation, every model, both speaker modes."""
    from sononet.label.engine import resolve_window, windows_of
    from sononet.label.run import LabelConfig
    from sononet.label.windows import Source

    lead = labs[0]  # the same features for every model here
    sr = lead.features.sample_rate
    window_s, _, (length, hop) = resolve_window(lead, None, None)
    audio, whole_s = lead.audio, lead.clip_span_s(window_s)
    decoded = dict(zip(group.clip_id, pool.map(lambda p: _decode(p, audio), group.source_path), strict=True))
    ids = [c for c, w in decoded.items() if w is not None]

    def perturbed(pert: Perturbation | None, cid: str) -> list[np.ndarray]:
        w = decoded[cid] if pert is None else pert(decoded[cid], sr, key=cid, seed=seed)
        return [
            clip for _, clip in windows_of(Source(cid, samples=w, duration_s=w.size / sr), length, hop, audio, whole_s)
        ]

    # Every perturbation is queued at once, so the pool perturbs the next ones while the models
    # score this one (waiting on the pool was a quarter of the suite's time).
    queued = [[pool.submit(perturbed, pert, c) for c in ids] for pert in perts]
    for pert, futures in zip(perts, queued, strict=True):
        stopping.check()  # a stop asked for (SIGTERM to a train-all worker) ends the suite within seconds
        windows = [f.result() for f in futures]  # per clip: its window clips
        owner = np.repeat(np.arange(len(ids)), [len(w) for w in windows])  # (n_windows,) clip index
        flat = [c for w in windows for c in w]
        batch = LabelConfig.batch_size
        feats = [lead.stored_features(flat[i : i + batch], length) for i in range(0, len(flat), batch)]
        means = {  # the speaker's mean over all its perturbed windows, with and without each clip's level
            level: _speaker_mean(feats, level) for level in {lab.level for lab in labs if lab.takes_speaker}
        }
        key = CLEAN if pert is None else pert.name
        for name, lab in zip(names, labs, strict=True):
            unknown = _file_probs(lab, feats, None, owner, len(ids))
            mean = means[lab.level] if lab.takes_speaker else None
            known = _file_probs(lab, feats, mean, owner, len(ids)) if lab.takes_speaker else unknown
            for mode, p in (("known", known), ("unknown", unknown)):
                probs.setdefault((key, mode, name), {}).update(zip(ids, p, strict=True))


def _speaker_mean(feats: list, level: bool) -> np.ndarray:
    """(n_mels,) mean log-mel over every valid frame of ``feats`` (each clip's level removed with ``level``)."""
    from sononet.features.normalize import valid_frame_sums

    sums = [valid_frame_sums(x.cpu().numpy(), n.numpy(), level) for x, n in feats]
    return (sum(s.sum(0) for s, _ in sums) / max(sum(int(n.sum()) for _, n in sums), 1)).astype(np.float32)


def _file_probs(lab: Any, feats: list, mean: np.ndarray | None, owner: np.ndarray, n: int) -> np.ndarray:
    """(n, C): each clip's mean over its windows' probabilities, as label's file rows."""
    win = np.concatenate([lab.forward(x, lengths, mean)[0] for x, lengths in feats])  # (n_windows, C)
    out = np.zeros((n, win.shape[1]), np.float64)
    np.add.at(out, owner, win)
    return (out / np.bincount(owner, minlength=n)[:, None]).astype(np.float32)
