"""Speaker groups for `sononet label --speaker-from` and the API: the same numbers as cross-validation's
known-speaker scoring, sharded and resumable, and every bad rule a one-line refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import shared_corpus, write_cremad_like
from test_label import FEATURES, LABELS, save_tiny

from sononet import EmotionClassifier
from sononet.features.reader import load_metadata
from sononet.label import LabelConfig, label
from sononet.label import speakers as speakers_mod
from sononet.label.speakers import MIN_GROUP_FILES, SpeakerRule, assign_shards
from sononet.models.saved import SavedModel
from sononet.prepare import PrepareConfig, prepare
from sononet.train.predict import predict

CPU = torch.device("cpu")
PROBS = [f"prob_{lab}" for lab in LABELS]
ACTOR = r"regex:/(\d{4})_"  # CREMA-D names: the actor id before the first underscore


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """Three actors' clips (each under the 3 s window, so label and prepare see the same samples) and their shards."""
    root = tmp_path_factory.mktemp("speakers")
    paths = write_cremad_like(root / "data", ["1001", "1002", "1003"], ["DFA", "IEO"], emotions=LABELS)
    shards = root / "shards"
    cfg = PrepareConfig(data=str(root / "data"), out=str(shards), mel_backend="torchaudio", device="cpu",
                        features=FEATURES)  # fmt: skip
    prepare(cfg, progress=False)
    return root / "data", shards, sorted(str(p.resolve()) for p in paths)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("spk-model") / "cnn" / "model")


def run(inp: Path | str, model: Path, out: Path, **kw) -> pd.DataFrame:
    cfg = LabelConfig(input=str(inp), model=str(model), out=str(out), mel_backend="torchaudio", device="cpu", **kw)
    label(cfg, progress=False)
    return pd.read_parquet(out).sort_values("path").reset_index(drop=True)


def cross_validation_probs(model_dir: Path, shards: Path, known: bool) -> pd.DataFrame:
    """What train-all's evaluation scores: each speaker's mean over its clips in the set (known) or the default."""
    meta = load_metadata(shards, ["clip_id", "source_path"]).to_pandas()
    preds = predict(SavedModel.load(model_dir), shards, list(meta.clip_id), CPU, known_speakers=known)
    return preds.merge(meta, on="clip_id").sort_values("source_path").reset_index(drop=True)


def test_label_speaker_groups_equal_cross_validation(corpus, model_dir, tmp_path: Path) -> None:
    data, shards, paths = corpus
    cv_known, cv_unknown = (cross_validation_probs(model_dir, shards, k) for k in (True, False))
    rows = run(data, model_dir, tmp_path / "a.parquet", speaker_from=ACTOR, speaker_min_files=1)
    assert list(rows.path) == list(cv_known.source_path) == paths
    np.testing.assert_allclose(rows[PROBS].to_numpy(), cv_known[PROBS].to_numpy(), atol=1e-5)
    assert set(rows.speaker_group) == {"1001", "1002", "1003"} and set(rows.speaker_files) == {len(paths) // 3}
    assert np.abs(cv_known[PROBS].to_numpy() - cv_unknown[PROBS].to_numpy()).max() > 1e-3  # the groups matter
    plain = run(data, model_dir, tmp_path / "b.parquet")  # no groups: the training default, as known=False
    np.testing.assert_allclose(plain[PROBS].to_numpy(), cv_unknown[PROBS].to_numpy(), atol=1e-5)
    assert "speaker_group" not in plain.columns

    clf = EmotionClassifier.load(model_dir, device="cpu", mel_backend="torchaudio")
    names = [Path(p).name.split("_")[0] for p in paths]
    by_list = clf.predict_proba(paths, speakers=names, min_speaker_files=1)
    np.testing.assert_allclose(by_list, rows[PROBS].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(clf.predict_proba(paths, speakers=ACTOR, min_speaker_files=1), by_list, atol=1e-6)
    one = [p for p, n in zip(paths, names) if n == "1001"]
    mean = clf.speaker_mean(one)  # the older one-speaker API agrees with the groups
    np.testing.assert_allclose(clf.predict_proba(one, speaker=mean), by_list[: len(one)], atol=1e-5)


def test_small_groups_keep_the_training_default(corpus, model_dir, tmp_path: Path) -> None:
    data, shards, paths = corpus
    cv_unknown = cross_validation_probs(model_dir, shards, False)
    per_actor = len(paths) // 3
    rows = run(data, model_dir, tmp_path / "a.parquet", speaker_from=ACTOR, speaker_min_files=per_actor + 1)
    assert set(rows.speaker_files) == {0} and rows.speaker_group.notna().all()
    np.testing.assert_allclose(rows[PROBS].to_numpy(), cv_unknown[PROBS].to_numpy(), atol=1e-5)
    assert MIN_GROUP_FILES > 1  # one clip's own mean would remove its emotion too


def test_sharded_and_resumed_runs_equal_one_run(corpus, model_dir, tmp_path: Path, monkeypatch) -> None:
    data, _, paths = corpus
    whole = run(data, model_dir, tmp_path / "one.parquet", speaker_from=ACTOR, speaker_min_files=1)
    out = tmp_path / "two.parquet"
    for i in range(2):
        cfg = LabelConfig(input=str(data), model=str(model_dir), out=str(out), mel_backend="torchaudio",
                          device="cpu", shard_index=i, shard_count=2, speaker_from=ACTOR, speaker_min_files=1,
                          part_size=5)  # fmt: skip
        label(cfg, progress=False)
    label(LabelConfig(out=str(out), merge=True), progress=False)
    sharded = pd.read_parquet(out).sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(sharded[["path", *PROBS, "speaker_group", "speaker_files"]],
                                  whole[["path", *PROBS, "speaker_group", "speaker_files"]])  # fmt: skip
    parts = out.with_suffix(".parts")
    owners = {}
    for part in parts.glob("part-*.parquet"):
        for group in pd.read_parquet(part).speaker_group:
            owners.setdefault(group, set()).add(part.name[5:10])  # the shard in part-<shard>-<k>
    assert all(len(s) == 1 for s in owners.values())  # each speaker lives in one shard

    # A rerun after losing a part redoes that part with the saved means, never a first pass again.
    next(parts.glob("part-00000-*.parquet")).unlink()
    monkeypatch.setattr(speakers_mod.MeanAccumulator, "add", lambda *a: pytest.fail("first pass ran again"))
    cfg = LabelConfig(input=str(data), model=str(model_dir), out=str(out), mel_backend="torchaudio", device="cpu",
                      shard_index=0, shard_count=2, speaker_from=ACTOR, speaker_min_files=1, part_size=5)  # fmt: skip
    label(cfg, progress=False)
    label(LabelConfig(out=str(out), merge=True), progress=False)
    again = pd.read_parquet(out).sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(again[["path", *PROBS]], sharded[["path", *PROBS]])
    with pytest.raises(ValueError, match="different speaker_from"):  # a changed rule never mixes with old parts
        label(LabelConfig(input=str(data), model=str(model_dir), out=str(out), device="cpu", shard_index=0,
                          shard_count=2, speaker_from="parent", part_size=5), progress=False)  # fmt: skip


def test_assign_shards_keeps_groups_whole_and_balanced() -> None:
    keys = ["a"] * 5 + ["b"] * 3 + [None] * 4 + ["c"] * 2 + ["a"]
    owner = assign_shards(keys, 3)
    for key in ("a", "b", "c"):
        assert len({o for o, k in zip(owner, keys) if k == key}) == 1
    loads = np.bincount(owner, minlength=3)
    assert loads.sum() == len(keys) and loads.max() - loads.min() <= 2
    assert owner == assign_shards(keys, 3) and assign_shards(keys, 1) == [0] * len(keys)


def test_rules_read_folders_names_and_manifests(tmp_path: Path) -> None:
    root = tmp_path / "in"
    files = [root / "ann" / "1.wav", root / "ann" / "2.wav", root / "bob" / "x" / "3.wav", root / "4.wav"]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")
    paths = [str(f.resolve()) for f in files]
    # Files directly in the input folder form the group "." (the folder itself); a list has no root.
    assert SpeakerRule.parse("parent").keys(paths, root) == ["ann", "ann", "bob/x", "."]
    assert SpeakerRule.parse("parent").keys(paths[:1], None) == [str(files[0].parent.resolve())]
    assert SpeakerRule.parse(r"regex:/(ann|bob)/").keys(paths) == ["ann", "ann", "bob", None]
    assert SpeakerRule.parse(r"regex:\d\.wav").keys(paths) == ["1.wav", "2.wav", "3.wav", "4.wav"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,who\nin/ann/1.wav,A\nin/ann/2.wav,\nin/bob/x/3.wav,007\n")
    assert SpeakerRule.parse("column:who").keys(paths, manifest) == ["A", None, "007", None]
    assert str(SpeakerRule.parse("column: who ")) == "column:who"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("speaker", "speaker_from must be one of parent, regex:PATTERN, column:NAME"),
        ("regex:", "speaker_from must be one of"),
        ("column:", "speaker_from must be one of"),
        ("parent:x", "speaker_from must be one of"),
        ("regex:(", r"speaker regex '\(' does not compile"),
        ("regex:" + "a" * 1001, "over 1000 characters"),
    ],
)
def test_bad_rules_are_refused_at_once(rule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LabelConfig(input="x", model="m", speaker_from=rule)


def test_hostile_patterns_and_columns(tmp_path: Path) -> None:
    paths = [f"/data/{'a' * 60}b.wav", "/data/c.wav"]
    with pytest.raises(ValueError, match="backtracks catastrophically"):
        SpeakerRule.parse("regex:^/data/(a|aa)+$").keys(paths)  # exponential in the a's: stopped, not waited on
    with pytest.raises(ValueError, match="matches none of the 2 input paths"):
        SpeakerRule.parse("regex:speaker_(\\d+)").keys(paths)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.wav,ANG\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['who'\]"):
        SpeakerRule.parse("column:who").keys(paths, manifest)
    with pytest.raises(ValueError, match="needs a CSV/TSV/Parquet manifest"):
        SpeakerRule.parse("column:who").keys(paths, tmp_path)
    with pytest.raises(ValueError, match="needs a manifest input"):
        SpeakerRule.parse("column:who").keys(paths, None)


def test_cli_errors_are_one_line(corpus, model_dir, tmp_path: Path) -> None:
    from sononet.cli import main

    data, _, _ = corpus
    base = ["label", str(data), "--model", str(model_dir), "--out", str(tmp_path / "o.parquet"), "--device", "cpu"]
    for extra, message in [
        (["--speaker-from", "regex:("], "error: speaker regex '(' does not compile"),
        (["--speaker-from", "regex:nobody_(\\d+)"], "error: speaker regex 'nobody_(\\d+)' matches none of the 18"),
        (["--speaker-from", "column:who"], "error: a manifest column needs a CSV/TSV/Parquet manifest"),
        (["--speaker-from", "parent", "--speaker-min-files", "0"], "error: speaker_min_files must be positive"),
    ]:
        result = CliRunner().invoke(main, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1].startswith(message), result.output
    ok = CliRunner().invoke(main, [*base, "--speaker-from", ACTOR, "--speaker-min-files", "2"])
    assert ok.exit_code == 0, ok.output
    assert "speaker groups (regex:/(\\d{4})_): 3 with their own mean" in ok.output


def test_models_without_speaker_norm_refuse_groups(corpus, tmp_path: Path) -> None:
    data, _, paths = corpus
    wave = save_tiny(tmp_path / "w2v" / "model", name="wav2vec2")
    with pytest.raises(ValueError, match="is not speaker-normalised"):
        run(data, wave, tmp_path / "o.parquet", speaker_from="parent")
    clf = EmotionClassifier.load(wave, device="cpu")
    with pytest.raises(ValueError, match="is not speaker-normalised"):
        clf.predict_proba(paths[:2], speakers=["a", "a"])


def test_api_speakers_misuse(corpus, model_dir) -> None:
    _, _, paths = corpus
    clf = EmotionClassifier.load(model_dir, device="cpu", mel_backend="torchaudio")
    x = np.zeros(16_000, np.float32) + 0.01
    for kwargs, message in [
        ({"speakers": ["a"]}, r"one name \(str or None\) per input \(2\)"),
        ({"speakers": ["a", 3]}, "one name"),
        ({"speakers": "column:who"}, "reads file paths"),
        ({"speakers": ["a", "a"], "speaker": np.zeros(FEATURES.n_mels, np.float32)}, "not both"),
        ({"speakers": ["a", "a"], "min_speaker_files": 0}, "min_speaker_files must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            clf.predict_proba(paths[:2], **kwargs)
    with pytest.raises(ValueError, match="reads file paths"):
        clf.predict_proba([x, x], sample_rate=16_000, speakers="parent")
    arrays = clf.predict_proba([x, x * 2], sample_rate=16_000, speakers=["s", "s"], min_speaker_files=2)
    assert arrays.shape == (2, len(LABELS))
    alone = clf.predict_proba(paths[:1], speakers=["one"])  # below MIN_GROUP_FILES: the default, as without
    np.testing.assert_array_equal(alone, clf.predict_proba(paths[:1]))


def test_spec_carries_the_rule(tmp_path: Path) -> None:
    from sononet.jobs import load_spec

    job, cfg = load_spec("label-folder", ["speaker_from=parent", "speaker_min_files=4"])
    assert job == "label-folder" and cfg.speaker_from == "parent" and cfg.speaker_min_files == 4
    with pytest.raises(ValueError, match="does not compile"):
        load_spec("label-folder", ["speaker_from=regex:("])


@pytest.mark.real_speech("ravdess")
def test_parent_groups_on_real_actor_folders(model_dir, tmp_path: Path) -> None:
    ravdess = shared_corpus("ravdess") / "audio"
    root = tmp_path / "audio"
    for actor in ("Actor_01", "Actor_02"):
        (root / actor).mkdir(parents=True)
        for f in sorted((ravdess / actor).glob("*.flac"))[:3]:
            shutil.copy(f, root / actor / f.name)
    rows = run(root, model_dir, tmp_path / "r.parquet", speaker_from="parent", speaker_min_files=3)
    rows = rows[rows.scope == "file"]  # clips over the window also have window rows
    assert list(rows.speaker_group) == ["Actor_01"] * 3 + ["Actor_02"] * 3 and set(rows.speaker_files) == {3}
    state = json.loads(next((tmp_path / "r.parts").glob("speakers-*.json")).read_text())
    assert sorted(state["groups"]) == ["Actor_01", "Actor_02"]
