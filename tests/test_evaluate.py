"""Evaluation: hand-checked metrics, bootstrap CIs, crowd baseline, and the written report."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from sononet.evaluate import (
    aggregate_folds,
    breakdown_table,
    compute_metrics,
    crowd_baseline,
    load_voice_vote_sets,
    markdown_table,
    write_evaluation,
)

EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
DEMO_PROTOCOL = {
    "corpus": "demo (synthetic)",
    "split": "speaker-disjoint",
    "folds": 1,
    "seed": 0,
    "pretrained": {"wav2vec2": "random-init tiny, not pretrained"},
}

# Ten clips, three classes; every number below was worked out by hand (see comments).
TINY_TRUE = ["A", "A", "A", "A", "B", "B", "B", "C", "C", "C"]
TINY_PRED = ["A", "A", "A", "B", "B", "B", "A", "C", "C", "A"]
TINY_PROBS = np.array(
    [
        [0.92, 0.04, 0.04],  # conf .92, right, bin 13
        [0.82, 0.10, 0.08],  # .82 right, bin 12
        [0.62, 0.20, 0.18],  # .62 right, bin 9
        [0.30, 0.52, 0.18],  # .52 wrong, bin 7
        [0.04, 0.92, 0.04],  # .92 right, bin 13
        [0.18, 0.72, 0.10],  # .72 right, bin 10
        [0.42, 0.30, 0.28],  # .42 wrong, bin 6
        [0.02, 0.02, 0.96],  # .96 right, bin 14
        [0.24, 0.20, 0.56],  # .56 right, bin 8
        [0.46, 0.14, 0.40],  # .46 wrong, bin 6
    ]
)


def make_predictions(
    models: tuple[str, ...] = ("cnn", "bigru"),
    labels: list[str] = EMOTIONS,
    n_speakers: int = 6,
    clips_per_speaker: int = 12,
    folds: int = 1,
    splits: tuple[str, ...] = ("test",),
    skill: float = 1.5,
    seed: int = 0,
) -> pd.DataFrame:
    """A predictions frame shaped like training's, CREMA-D-style clip ids, noisy softmax outputs."""
    rng = np.random.default_rng(seed)
    intensities = ["LO", "MD", "HI", "XX"]
    rows = []
    for split in splits:
        for s in range(n_speakers):
            speaker = str(1001 + s + (100 if split == "val" else 0))
            for c in range(clips_per_speaker):
                true = labels[c % len(labels)]
                clip_id = f"{speaker}_IEO_{true}_{intensities[c % 4]}_{c}"
                for model in models:
                    logits = rng.normal(size=len(labels))
                    logits[labels.index(true)] += skill
                    p = np.exp(logits) / np.exp(logits).sum()
                    row = {
                        "clip_id": clip_id,
                        "split": split,
                        "model": model,
                        "fold": s % folds,
                        "true": true,
                        "pred": labels[int(p.argmax())],
                        "speaker": speaker,
                        "sex": "Female" if s % 2 else "Male",
                        "intensity": intensities[c % 4],
                        "sentence": "IEO",
                    }
                    row.update({f"prob_{label}": float(p[i]) for i, label in enumerate(labels)})
                    rows.append(row)
    return pd.DataFrame(rows)


def history(n: int = 5) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "train_loss": 2 - 0.2 * e,
            "val_loss": 2 - 0.1 * e,
            "train_acc": 0.1 * e,
            "val_acc": 0.08 * e,
            "lr": 1e-3,
        }
        for e in range(1, n + 1)
    ]


# ---------------------------------------------------------------- metrics


def test_tiny_example_matches_hand_computation() -> None:
    m = compute_metrics(TINY_TRUE, TINY_PRED, TINY_PROBS, ["A", "B", "C"], n_boot=200)
    assert m["n"] == 10
    assert m["confusion"] == [[3, 1, 0], [1, 2, 0], [1, 0, 2]]
    assert m["accuracy"]["value"] == pytest.approx(0.7)  # 7 of 10 on the diagonal
    assert m["ua"]["value"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)  # 0.6944
    # F1 = 2 tp / (support + predicted): A 6/9, B 4/6, C 4/5
    assert m["macro_f1"]["value"] == pytest.approx((6 / 9 + 4 / 6 + 4 / 5) / 3)  # 0.7111
    assert m["weighted_f1"]["value"] == pytest.approx((4 * 6 / 9 + 3 * 4 / 6 + 3 * 4 / 5) / 10)  # 0.7067
    assert m["per_class"]["A"] == pytest.approx({"precision": 0.6, "recall": 0.75, "f1": 6 / 9, "support": 4})
    assert m["per_class"]["C"]["precision"] == pytest.approx(1.0)
    # ECE: bin gaps |acc - conf| weighted by count: 2*.08 + .18 + .38 + .52 + .28 + 2*.44 + .04 + .44 = 2.88
    assert m["ece"] == pytest.approx(0.288)
    counts = [b["count"] for b in m["reliability"]["bins"]]
    assert counts == [0, 0, 0, 0, 0, 0, 2, 1, 1, 1, 1, 0, 1, 2, 1]
    assert m["reliability"]["bins"][6]["accuracy"] == 0.0
    assert m["reliability"]["bins"][6]["confidence"] == pytest.approx(0.44)
    assert m["pred_argmax_disagree"] == 0


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("drop_class", [False, True])
def test_headline_matches_sklearn(drop_class: bool) -> None:
    rng = np.random.default_rng(1)
    used = ["a", "b", "c", "d"]
    t = rng.choice(used[:3] if drop_class else used, size=300)  # "d" may be absent from the truth
    p = np.where(rng.random(300) < 0.6, t, rng.choice(used, size=300))
    # "e" never occurs: like sklearn without `labels`, it must not count as F1 = 0.
    m = compute_metrics(t, p, None, [*used, "e"], n_boot=0)
    assert m["accuracy"]["value"] == pytest.approx(accuracy_score(t, p))
    assert m["ua"]["value"] == pytest.approx(balanced_accuracy_score(t, p))
    assert m["macro_f1"]["value"] == pytest.approx(f1_score(t, p, average="macro"))
    assert m["weighted_f1"]["value"] == pytest.approx(f1_score(t, p, average="weighted"))
    assert m["ece"] is None and m["accuracy"]["ci_low"] is None


def _random_run(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.choice(EMOTIONS, size=n)
    p = np.where(rng.random(n) < 0.65, t, rng.choice(EMOTIONS, size=n))
    return t, p


def test_ci_contains_point_and_shrinks_with_more_data() -> None:
    widths = []
    for n in (60, 6000):
        t, p = _random_run(n, seed=n)
        m = compute_metrics(t, p, None, EMOTIONS, n_boot=500)
        for name in ("accuracy", "ua", "macro_f1", "weighted_f1"):
            assert m[name]["ci_low"] <= m[name]["value"] <= m[name]["ci_high"], name
        widths.append(m["accuracy"]["ci_high"] - m["accuracy"]["ci_low"])
    # Width scales like 1/sqrt(n): 100x the clips should give roughly a tenth of the width.
    assert widths[1] < widths[0] / 5
    # At n = 6000 and p = 0.7 the normal-approximation 95 % width is 2 * 1.96 * sqrt(.21/6000) = 0.023.
    assert widths[1] == pytest.approx(0.023, abs=0.004)


def test_bootstrap_is_reproducible_from_seed() -> None:
    t, p = _random_run(200, seed=3)
    a = compute_metrics(t, p, None, EMOTIONS, n_boot=300, seed=7)
    b = compute_metrics(t, p, None, EMOTIONS, n_boot=300, seed=7)
    c = compute_metrics(t, p, None, EMOTIONS, n_boot=300, seed=8)
    assert a["ua"] == b["ua"]
    assert a["ua"]["ci_low"] != c["ua"]["ci_low"] or a["ua"]["ci_high"] != c["ua"]["ci_high"]


def test_aggregate_folds_mean_and_sample_std() -> None:
    folds = []
    for acc in (0.6, 0.7, 0.8):
        folds.append(
            {
                "n": 100,
                "accuracy": {"value": acc},
                "ua": {"value": acc - 0.1},
                "macro_f1": {"value": 0.5},
                "weighted_f1": {"value": 0.5},
                "ece": 0.1,
            }
        )
    agg = aggregate_folds(folds)
    assert agg["n_folds"] == 3 and agg["n"] == 300
    assert agg["accuracy"]["mean"] == pytest.approx(0.7)
    assert agg["accuracy"]["std"] == pytest.approx(0.1)  # ddof=1: sqrt((.01 + 0 + .01) / 2)
    assert agg["ua"]["mean"] == pytest.approx(0.6)
    assert agg["macro_f1"]["std"] == pytest.approx(0.0)
    assert agg["ece"]["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="at least one fold"):
        aggregate_folds([])


def test_two_class_label_set() -> None:
    t = ["pos", "neg", "pos", "pos", "neg"]
    p = ["pos", "neg", "neg", "pos", "neg"]
    probs = np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.7, 0.3]])
    m = compute_metrics(t, p, probs, ["neg", "pos"], n_boot=100)
    assert m["accuracy"]["value"] == pytest.approx(0.8)
    assert m["ua"]["value"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["confusion"] == [[2, 0], [1, 2]]
    assert len(m["per_class"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y_true": [], "y_pred": [], "probs": None}, "zero clips"),
        ({"y_true": ["A"], "y_pred": ["A", "B"], "probs": None}, "same length"),
        ({"y_true": ["A", "Z"], "y_pred": ["A", "B"], "probs": None}, r"not in the label set.*'Z'"),
        ({"y_true": ["A", "B"], "y_pred": ["A", "B"], "probs": np.ones((2, 2)) / 2}, "shape"),
        ({"y_true": ["A", "B"], "y_pred": ["A", "B"], "probs": np.full((2, 3), 0.5)}, "sum to 1"),
        ({"y_true": ["A", "B"], "y_pred": ["A", "B"], "probs": np.full((2, 3), np.nan)}, "finite"),
    ],
)
def test_compute_metrics_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(labels=["A", "B", "C"], n_boot=10, **kwargs)


def test_compute_metrics_rejects_bad_label_sets() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        compute_metrics(["A"], ["A"], None, ["A"])
    with pytest.raises(ValueError, match="unique"):
        compute_metrics(["A"], ["A"], None, ["A", "A"])


# ---------------------------------------------------------------- tables


def test_markdown_table_formats_and_escapes() -> None:
    df = pd.DataFrame({"name": ["a|b", None], "value": [0.12345, float("nan")], "n": [3, 4]})
    md = markdown_table(df).splitlines()
    assert md[0] == "| name | value | n |"
    assert md[1] == "| --- | ---: | ---: |"
    assert md[2] == "| a\\|b | 0.123 | 3 |"
    assert md[3] == "|  |  | 4 |"


def test_breakdown_keeps_unknown_metadata_as_a_group() -> None:
    frame = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "split": ["test"] * 4,
            "true": ["A", "B", "A", "B"],
            "pred": ["A", "A", "A", "B"],
            "sex": ["Male", "Male", None, None],
        }
    )
    table = breakdown_table(frame, "sex").set_index("sex")
    assert table.loc["Male", "accuracy"] == pytest.approx(0.5)
    assert table.loc["Male", "ua"] == pytest.approx(0.5)  # A right, B wrong
    assert table.loc["(unknown)", "n"] == 2 and table.loc["(unknown)", "accuracy"] == pytest.approx(1.0)
    assert breakdown_table(frame.assign(sex=None), "sex").empty


# ---------------------------------------------------------------- crowd baseline


def test_crowd_voice_only_baseline_over_all_cremad_clips() -> None:
    path = resources.files("sononet.corpus").joinpath("data", "summaryTable.csv")
    with path.open("r", encoding="utf-8") as f:
        clip_ids = [row["FileName"] for row in csv.DictReader(f)]
    assert len(clip_ids) == 7442
    truth = [c.split("_")[2] for c in clip_ids]
    crowd = crowd_baseline(clip_ids, truth, EMOTIONS)
    assert crowd["n_with_vote"] == 7442 and crowd["n_skipped_no_vote"] == 0
    assert crowd["n_ties"] == 644
    assert 100 * crowd["accuracy"] == pytest.approx(41.6, abs=0.05)
    expected = {"NEU": 95.7, "ANG": 60.6, "FEA": 32.0, "DIS": 27.0, "HAP": 26.0, "SAD": 16.4}
    got = {k: round(100 * v, 1) for k, v in crowd["per_class_recall"].items()}
    assert got == expected
    # Breaking ties by the first letter (alphabetical) instead credits 644 ties generously.
    first = crowd_baseline(clip_ids, truth, EMOTIONS, tie_policy="first")
    assert 100 * first["accuracy"] == pytest.approx(45.5, abs=0.05)


def test_crowd_baseline_skips_clips_without_a_vote() -> None:
    votes = load_voice_vote_sets()
    assert votes["1001_IEO_ANG_MD"] == ("ANG", "DIS")  # "A:D" in summaryTable.csv
    crowd = crowd_baseline(["1001_IEO_NEU_XX", "1001_IEO_ANG_MD", "9999_XXX_ANG_XX"], ["NEU", "ANG", "ANG"], EMOTIONS)
    assert crowd["n_with_vote"] == 2 and crowd["n_skipped_no_vote"] == 1 and crowd["n_ties"] == 1
    assert crowd["accuracy"] == pytest.approx(0.5)  # NEU right, the A:D tie counts as wrong
    # read_voice_votes-style (label, level) pairs are accepted too.
    same = crowd_baseline(["x"], ["ANG"], EMOTIONS, votes={"x": ("A:N", 50.0)}, tie_policy="first")
    assert same["accuracy"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tie_policy"):
        crowd_baseline(["x"], ["ANG"], EMOTIONS, votes={}, tie_policy="random")


# ---------------------------------------------------------------- report


def test_write_evaluation_writes_every_file(tmp_path: Path) -> None:
    preds = make_predictions(models=("cnn", "wav2vec2"), splits=("test", "val"))
    hist = {"cnn": history(), "wav2vec2": history(3)}
    metrics = write_evaluation(tmp_path, preds, EMOTIONS, DEMO_PROTOCOL, hist, n_boot=100)

    expected = ["metrics.json", "report.md", "tables/headline.csv", "tables/headline.md"]
    for model in ("cnn", "wav2vec2"):
        for split in ("test", "val"):
            expected += [f"tables/per_class_{model}_{split}.csv", f"tables/per_class_{model}_{split}.md"]
            expected += [f"plots/confusion_{model}_{split}.png", f"plots/reliability_{model}_{split}.png"]
        expected.append(f"plots/training_{model}.png")
    for by in ("intensity", "sex", "speaker"):
        expected += [f"tables/by_{by}.csv", f"tables/by_{by}.md"]
    for rel in expected:
        assert (tmp_path / rel).stat().st_size > 0, rel
    assert not (tmp_path / "tables" / "seed_comparison.csv").exists()  # not CREMA-D: no seed comparison

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    assert on_disk["protocol"]["corpus"] == "demo (synthetic)"
    test = on_disk["models"]["cnn"]["test"]["pooled"]
    assert test["n"] == 72 and 0 <= test["accuracy"]["value"] <= 1
    assert on_disk["baselines"] is None

    report = (tmp_path / "report.md").read_text()
    assert "Synthetic demo corpus — numbers are not comparable to CREMA-D" in report
    assert "corpus=demo (synthetic)" in report and "split=speaker-disjoint" in report
    assert "random-init tiny, not pretrained" in report
    assert "](plots/confusion_cnn_test.png)" in report and "Crowd" not in report
    for md in tmp_path.glob("tables/*.md"):
        assert "Protocol: corpus=demo (synthetic)" in md.read_text(), md.name
    assert set(pd.read_csv(tmp_path / "tables" / "by_sex.csv")["corpus"]) == {"demo (synthetic)"}


def test_write_evaluation_cremad_folds_baselines_and_leaky_banner(tmp_path: Path) -> None:
    preds = make_predictions(models=("cnn",), folds=3, n_speakers=6)
    preds["clip_id"] = preds["clip_id"].str.rsplit("_", n=1).str[0]  # real CREMA-D ids: 1001_IEO_ANG_LO
    preds = preds.drop_duplicates(["model", "split", "fold", "clip_id"])
    protocol = {"corpus": "cremad", "split": "random (speaker-dependent, leaky)", "folds": 3, "seed": 1}
    metrics = write_evaluation(tmp_path, preds, EMOTIONS, protocol, {}, n_boot=50)

    entry = metrics["models"]["cnn"]["test"]
    assert sorted(entry["folds"]) == ["0", "1", "2"]
    assert entry["aggregate"]["n_folds"] == 3
    assert entry["pooled"]["n"] == sum(f["n"] for f in entry["folds"].values())
    crowd = metrics["baselines"]["crowd_voice_only"]
    assert crowd["n_clips"] == len(preds) and crowd["n_with_vote"] + crowd["n_skipped_no_vote"] == len(preds)
    assert metrics["baselines"]["seed"]["accuracy"]["wav2vec2"] == pytest.approx(0.69)
    report = (tmp_path / "report.md").read_text()
    assert "Split is not speaker-disjoint (random (speaker-dependent, leaky))" in report
    assert "Comparison with the seed" in report and "Crowd voice-only baseline" in report
    assert "does not state its split protocol" in report
    assert "Synthetic" not in report
    assert (tmp_path / "tables" / "seed_comparison.md").exists()
    assert "No training history was recorded." in report


def test_write_evaluation_two_classes_and_speaker_overlap_warning(tmp_path: Path) -> None:
    preds = make_predictions(models=("bigru",), labels=["neg", "pos"], splits=("test", "val"))
    preds.loc[preds["split"] == "val", "speaker"] = "1001"  # a test speaker leaks into val
    metrics = write_evaluation(tmp_path, preds, ["neg", "pos"], DEMO_PROTOCOL, None, n_boot=20)
    assert metrics["checks"]["speakers_shared_between_splits"] == {"0": ["1001"]}
    assert "speakers appear in more than one split" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.iloc[0:0], "empty"),
        (lambda df: df.drop(columns=["prob_SAD"]), r"lacks required columns \['prob_SAD'\]"),
        (lambda df: df.drop(columns=["true"]), "lacks required columns"),
        (
            lambda df: df.assign(pred="SURPRISE"),
            r"labels mismatch: column 'pred' holds labels \['SURPRISE'\]",
        ),
        (lambda df: df.assign(prob_CALM=0.0), r"labels mismatch.*prob_CALM"),
        (lambda df: pd.concat([df, df.iloc[:1]]), "duplicates"),
        (lambda df: df.assign(prob_ANG=np.nan), "finite"),
    ],
)
def test_write_evaluation_rejects_bad_predictions(tmp_path: Path, mutate, message: str) -> None:
    preds = mutate(make_predictions(models=("cnn",), n_speakers=2))
    with pytest.raises(ValueError, match=message):
        write_evaluation(tmp_path, preds, EMOTIONS, DEMO_PROTOCOL, {}, n_boot=10)
    assert not (tmp_path / "metrics.json").exists()


def test_write_evaluation_rejects_bad_labels_and_protocol(tmp_path: Path) -> None:
    preds = make_predictions(models=("cnn",), n_speakers=2)
    with pytest.raises(ValueError, match="labels mismatch"):
        write_evaluation(tmp_path, preds, EMOTIONS[:5], DEMO_PROTOCOL, {}, n_boot=10)
    with pytest.raises(ValueError, match="protocol must state corpus and split"):
        write_evaluation(tmp_path, preds, EMOTIONS, {"corpus": "cremad"}, {}, n_boot=10)


def test_report_warnings_follow_the_declared_protocol_not_its_wording(tmp_path: Path) -> None:
    """The banners come from Protocol's flags, set by the loader and the split, not from parsing names."""
    from sononet.corpus.protocol import Protocol

    preds = make_predictions(models=("cnn",), n_speakers=2)
    protocol = Protocol(
        corpus="my corpus", split="speaker-disjoint in name only", synthetic=True, speaker_disjoint=False
    )
    metrics = write_evaluation(tmp_path, preds, EMOTIONS, protocol, {}, n_boot=10)
    report = (tmp_path / "report.md").read_text()
    assert metrics["checks"]["synthetic_corpus"] and not metrics["checks"]["speaker_disjoint_claimed"]
    assert "Synthetic demo corpus" in report and "Split is not speaker-disjoint" in report
    assert Protocol.from_dict(metrics["protocol"]) == protocol  # metrics.json round-trips


def test_protocol_reads_models_saved_before_the_flags_were_declared() -> None:
    from sononet.corpus.protocol import Protocol

    old = Protocol.from_dict({"corpus": "demo (synthetic)", "split": "random (speaker-dependent, leaky)", "folds": 1})
    assert old.synthetic and not old.speaker_disjoint
