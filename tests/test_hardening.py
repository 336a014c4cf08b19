"""No code runs from a run directory, no hang on odd files, no silent corruption.

One test (or parametrised set) per failure mode, each failing on the code before its fix; the
downloader's two live in test_download.py beside its local mirror.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import tone

from sononet.audio import AudioConfig, probe
from sononet.corpus.folder import load_manifest
from sononet.errors import AudioError, DiskFullError
from sononet.features.mel import FeatureConfig
from sononet.label import LabelConfig, label, list_inputs, merge, parts_dir
from sononet.locking import FolderLockedError, folder_lock
from sononet.models.registry import build_model
from sononet.models.saving import load_model, save_model
from sononet.prepare import PrepareConfig, prepare
from sononet.train.augment import AugmentConfig
from sononet.train.checkpoint import load_checkpoint
from sononet.train.config import TrainConfig

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
FEATURES = FeatureConfig(n_fft=512, hop_length=256, n_mels=32)
LABELS = ["ANG", "HAP", "SAD"]


def save_tiny_cnn(directory: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model("cnn", n_classes=3, n_mels=FEATURES.n_mels, channels=(4, 8), dropouts=(0.1, 0.1))
    meta = {
        "labels": LABELS, "feature_config": FEATURES.to_dict(), "input_kind": "mel",
        "norm": {"mean": [-30.0] * FEATURES.n_mels, "std": [15.0] * FEATURES.n_mels},
    }  # fmt: skip
    return save_model(directory, model.eval(), "cnn", meta)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_cnn(tmp_path_factory.mktemp("model") / "cnn" / "model")


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    for i, name in enumerate(("a.wav", "b.wav", "c.wav")):
        sf.write(root / name, tone(1.5, f0=140 + 30 * i, seed=i), 16_000, subtype="PCM_16")
    return root


def run_label(inp: Path, model: Path, out: Path, **kw) -> dict:
    cfg = LabelConfig(input=str(inp), model=str(model), out=str(out), mel_backend="torchaudio", device="cpu", **kw)
    return label(cfg, progress=False)


def file_rows(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out)
    return df[df.scope == "file"].sort_values(["path", "status"]).reset_index(drop=True)


# 1. Resuming training never unpickles code.


class _Poison:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "pwned"))


def test_poisoned_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"model": {}, "state": _Poison(marker)}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="last.pt is unreadable"):
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()
    state = {
        "epoch": 1,
        "history": [{"val_loss": 0.5}],
        "best_score": -0.5,
        "best_epoch": 1,
        "bad_epochs": 0,
        "step": 3,
    }
    plain = {"model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "state": state, "rng": {}}
    torch.save(plain, tmp_path / "ok.pt")  # what the loop writes: tensors, dicts, lists, numbers
    loaded = load_checkpoint(tmp_path / "ok.pt")["state"]  # written before mid-epoch stops: starts the next epoch
    assert loaded.history == [{"val_loss": 0.5}] and (loaded.epoch, loaded.batch) == (1, 0)
    torch.save({**plain, "state": {**state, "lr_trace": []}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt holds no training state this SonoNet can resume"):
        load_checkpoint(tmp_path / "foreign.pt")


@pytest.mark.checkout  # reads the repository, not the installed package
def test_no_pickle_loading_anywhere_in_the_package() -> None:
    for path in sorted((ROOT / "sononet").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "dill", "cloudpickle", "joblib"} & set(names), f"{path}: {names}"
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load":
                kw = {k.arg: k.value for k in node.keywords}
                if "weights_only" in kw or ast.unparse(node.func) == "torch.load":
                    assert ast.unparse(kw.get("weights_only", ast.Constant(None))) == "True", f"{path}:{node.lineno}"
                assert ast.unparse(kw.get("allow_pickle", ast.Constant(False))) == "False", f"{path}:{node.lineno}"


# 2. A FIFO or a link to /dev/zero is a row, never opened.


def test_fifo_and_dev_zero_become_rows_without_a_hang(audio: Path, model_dir: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.wav").symlink_to(audio / "a.wav")  # a link to a regular file is a normal input
    os.mkfifo(inp / "pipe.wav")
    (inp / "zero.wav").symlink_to("/dev/zero")
    out = tmp_path / "l.parquet"
    cmd = [sys.executable, "-m", "sononet", "label", str(inp), "--model", str(model_dir), "--out", str(out),
           "--device", "cpu", "--mel-backend", "torchaudio"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)  # the old code hangs here
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = file_rows(out)
    assert dict(zip(rows.path, rows.error_reason.fillna("ok"))) == {  # paths are stored resolved
        str(audio.resolve() / "a.wav"): "ok", str(inp.resolve() / "pipe.wav"): "not_a_file", "/dev/zero": "not_a_file",
    }  # fmt: skip
    assert rows.source_sha256[rows.status == "error"].isna().all()  # never hashed
    with pytest.raises(AudioError, match="not_a_file: .* is a FIFO"):
        probe(inp / "pipe.wav")


def test_corpus_folders_give_non_regular_files_a_row(cremad_dir: Path, tmp_path: Path) -> None:
    from sononet.corpus import load_corpus

    os.mkfifo(cremad_dir / "2001_DFA_SAD_XX.wav.fifo")
    (cremad_dir / "2001_DFA_HAP_HI.wav").symlink_to("/dev/zero")
    (tmp_path / "folder" / "ANG").mkdir(parents=True)
    os.mkfifo(tmp_path / "folder" / "ANG" / "x.wav")
    for corpus, n in ((load_corpus(cremad_dir), 2), (load_corpus(tmp_path / "folder"), 1)):
        assert [e.reason for e in corpus.errors] == ["not_a_file"] * n, corpus.errors


def test_ravdess_folder_gives_non_regular_and_repeated_files_a_row(tmp_path: Path) -> None:
    from sononet.corpus import load_corpus

    root = tmp_path / "ravdess"
    (root / "Actor_01").mkdir(parents=True)
    for i, stem in enumerate(("03-01-05-02-01-01-01", "03-01-03-01-02-01-01")):
        sf.write(root / "Actor_01" / f"{stem}.wav", tone(1.5, seed=i), 16_000, subtype="PCM_16")
    sf.write(root / "03-01-05-02-01-01-01.wav", tone(1.5, seed=9), 16_000, subtype="PCM_16")  # flat copy
    os.mkfifo(root / "Actor_01" / "03-01-04-01-01-01-01.wav")
    corpus = load_corpus(root)
    assert corpus.kind == "ravdess" and len(corpus.clips) == 2
    assert sorted(e.reason for e in corpus.errors) == ["duplicate", "not_a_file"], corpus.errors


# 3. config.json is checked whole before any work.


def _edit(doc: dict, key: str, value: object) -> None:
    node = doc
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("meta.labels", ["A", "B", "C", "D", "E", "F", "G", "H"], r"meta.labels must hold one label per class"),
        ("meta.labels", "ANG", r"meta.labels must be a list of non-empty strings"),
        ("meta.labels", ["ANG", "HAP"], r"meta.labels must hold one label per class .*n_classes = 3"),
        ("meta.labels", ["ANG", "ANG", "SAD"], r"meta.labels must not repeat"),
        ("meta.labels", ["ANG", 1, "SAD"], r"meta.labels must be a list"),
        ("format_version", "2", r"format_version must be an integer"),
        ("model_config", None, r"model_config must be a JSON object"),
        ("model", 7, r"model must be a model name"),
        ("meta", [], r"meta must be a JSON object"),
        ("model_config.n_classes", "3", r"model_config.n_classes must be int"),
        ("model_config.n_mels", 64, r"meta.feature_config.n_mels must equal model_config.n_mels = 64"),
        ("meta.feature_config.n_fft", -1, r"meta.feature_config is not a valid feature config"),
        ("meta.norm.mean", [0.0] * 31, r"meta.norm.mean must be a list of 32 numbers"),
        ("meta.norm.std", [0.0] * 32, r"meta.norm.std must hold finite numbers"),
        ("meta.input_kind", "wave", r"meta.input_kind must be 'mel'"),
    ],
)
def test_config_json_is_checked_before_any_work(tmp_path: Path, key: str, value: object, match: str) -> None:
    d = save_tiny_cnn(tmp_path / "m")
    doc = json.loads((d / "config.json").read_text())
    _edit(doc, key, value)
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"config\.json: " + match):
        load_model(d)


# 4. Duplicate manifest entries: one row each, reason `duplicate`, first kept.


def test_duplicate_manifest_rows_in_prepare(audio: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    rows = [(audio / "a.wav", "ANG"), (audio / "b.wav", "HAP"), (audio / "a.wav", "SAD"), (f"{audio}/./a.wav", "HAP")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(manifest, index=False)
    corpus = load_manifest(manifest)
    assert [(Path(c.path).name, c.label) for c in corpus.clips] == [("a.wav", "ANG"), ("b.wav", "HAP")]
    assert [e.reason for e in corpus.errors] == ["duplicate", "duplicate"] and corpus.n_files == 4
    assert len({c.clip_id for c in corpus.clips}) == len(corpus.clips)


def test_duplicate_list_entries_in_label_across_shards(audio: Path, model_dir: Path, tmp_path: Path) -> None:
    lst = tmp_path / "files.txt"
    lst.write_text(f"{audio / 'a.wav'}\n{audio / 'b.wav'}\n{audio / 'a.wav'}\n")
    out = tmp_path / "dup.parquet"
    for i in range(2):
        run_label(lst, model_dir, out, shard_index=i, shard_count=2)
    summary = merge(out)
    rows = file_rows(out)
    assert summary["files"] == len(rows) == 3  # one file row per listed input
    assert rows.error_reason.fillna("ok").tolist() == ["duplicate", "ok", "ok"]  # a.wav twice, b.wav


# 5. Locks on output folders; merge re-verifies every part.


def test_prepare_refuses_a_folder_in_use(cremad_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    cfg = PrepareConfig(data=str(cremad_dir), out=str(out), device="cpu", mel_backend="torchaudio")
    with folder_lock(out, "prepare"), pytest.raises(FolderLockedError, match=r"shards is in use: prepare \(pid"):
        prepare(cfg, progress=False)
    assert not (out / "manifest.json").exists()


def test_label_locks_its_shard_and_merge_waits_for_all(audio: Path, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.parquet"
    pdir = parts_dir(out)
    with folder_lock(pdir, "label", name=".lock-00000"), pytest.raises(FolderLockedError, match="in use"):
        run_label(audio, model_dir, out, shard_index=0, shard_count=2)
    with folder_lock(pdir, "label --merge"), pytest.raises(FolderLockedError, match="label --merge"):
        run_label(audio, model_dir, out, shard_index=0, shard_count=2)
    run_label(audio, model_dir, out, shard_index=0, shard_count=2)
    with folder_lock(pdir, "label", shared=True):  # shard 1 at work: shard 0 may run beside it
        run_label(audio, model_dir, out, shard_index=0, shard_count=2)
        with pytest.raises(FolderLockedError):
            merge(out)
    run_label(audio, model_dir, out, shard_index=1, shard_count=2)
    part = sorted(pdir.glob("part-00001-*.parquet"))[0]
    pq.write_table(pq.read_table(part).slice(0, 0), part)  # changed after it was listed
    with pytest.raises(ValueError, match=f"part.s. \\['{part.name}'\\] no longer match the sha256"):
        merge(out)
    assert not out.exists()


def test_a_different_model_never_joins_a_running_labelling(audio: Path, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.parquet"
    run_label(audio, model_dir, out, shard_index=0, shard_count=2)
    other = save_tiny_cnn(tmp_path / "other" / "model", seed=1)
    with pytest.raises(ValueError, match="state-00000.json was written with a different model_id"):
        run_label(audio, other, out, shard_index=1, shard_count=2)


# 6. Manifest cells keep their type: no `nan` class, no "2.0", no "['2001']".


def test_manifest_types_are_strict(audio: Path, tmp_path: Path) -> None:
    a, b, c, d = (str(audio / n) for n in ("a.wav", "b.wav", "c.wav", "./b.wav"))
    (tmp_path / "m.csv").write_text(f"path,label,speaker\n{a},NaN,1\n{b},1.5,2\n{c},2,3\n{d},,4\n")
    corpus = load_manifest(tmp_path / "m.csv")
    assert [(Path(x.path).name, x.label) for x in corpus.clips] == [("c.wav", "2")] and corpus.labels == ["2"]
    assert [e.reason for e in corpus.errors] == ["unknown_label", "unknown_label", "duplicate"]
    (tmp_path / "two.csv").write_text(f"path,label,label\n{a},ANG,HAP\n")
    with pytest.raises(ValueError, match=r"duplicate column name\(s\) \['label'\]"):
        load_manifest(tmp_path / "two.csv")
    pq.write_table(pa.table({"path": [a, b], "label": [1.5, 2.0]}), tmp_path / "f.parquet")
    with pytest.raises(ValueError, match=r"column 'label' must hold text or integers. Found type: double"):
        load_manifest(tmp_path / "f.parquet")
    pq.write_table(pa.table({"path": [a], "label": ["ANG"], "speaker": [["2001"]]}), tmp_path / "l.parquet")
    with pytest.raises(ValueError, match=r"column 'speaker' must hold text or integers. Found type: list"):
        load_manifest(tmp_path / "l.parquet")
    pq.write_table(pa.table({"path": [a, b], "label": [0, 1], "speaker": [7, 8]}), tmp_path / "i.parquet")
    corpus = load_manifest(tmp_path / "i.parquet")
    assert [(x.label, x.speaker) for x in corpus.clips] == [("0", "7"), ("1", "8")]


# 9. No model folder's own Python runs, even when someone answers transformers' prompt with "y".


def test_model_folder_code_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sononet.models.backbone import SpeechEncoder

    marker, d = tmp_path / "ran", tmp_path / "remote"
    d.mkdir()
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps({"model_type": "sononet-evil", "auto_map": auto_map}))
    (d / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    monkeypatch.setattr("builtins.input", lambda *a: "y")
    with pytest.raises(ValueError, match="SonoNet never runs code from a model folder"):
        SpeechEncoder.load(d)
    assert not marker.exists()


def test_every_transformers_load_pins_trust_remote_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from sononet.models.backbone import SpeechEncoder, tiny_wav2vec2_config

    transformers.Wav2Vec2Model(tiny_wav2vec2_config()).save_pretrained(tmp_path / "w")
    calls: list[object] = []
    for cls in (transformers.AutoConfig, transformers.AutoModel):

        def spy(*args: object, _orig=cls.from_pretrained, **kw: object) -> object:
            calls.append(kw.get("trust_remote_code", "unset"))
            return _orig(*args, **kw)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    SpeechEncoder.load(tmp_path / "w")
    assert calls == [False, False]


# 10. A full disk is one line that names the path and says a rerun resumes; no temp file stays.


def test_disk_full_during_merge(audio: Path, model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from sononet.cli import main

    out = tmp_path / "full.parquet"
    run_label(audio, model_dir, out, shard_index=0, shard_count=1)  # also merges once
    out.unlink()

    def no_space(self, table, *a, **k) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", no_space)
    with pytest.raises(DiskFullError, match=f"no space left on the device holding {out}; .*rerun"):
        merge(out)
    result = CliRunner().invoke(main, ["label", "--merge", "--out", str(out)])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0, result.output
    assert result.output.startswith("error: no space left on the device holding") and "resumes" in result.output
    assert not list(tmp_path.glob(".full.parquet.tmp-*")) and not out.exists()


def test_disk_full_in_an_atomic_write_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    from sononet import io as shards

    def half_written(table, where, **kw) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.pq, "write_table", half_written)
    with pytest.raises(DiskFullError, match=f"holding {tmp_path / 'shard-00000.parquet'}; .*resumes"):
        shards.atomic_write_table(tmp_path / "shard-00000.parquet", pa.table({"x": [1]}))
    assert list(tmp_path.iterdir()) == []


# 11. Permission denied is `unreadable`, not `corrupt`.


def test_permission_denied_is_unreadable(audio: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:  # pytest's folders are 0700: `nobody` could not even stat
        Path(tmp).chmod(0o755)
        locked = Path(tmp) / "locked.wav"
        locked.write_bytes((audio / "a.wav").read_bytes())
        locked.chmod(0)
        assert _probe_reason(locked, as_nobody=os.geteuid() == 0) == "unreadable"


def _probe_reason(path: Path, as_nobody: bool) -> str:
    """probe's error reason; as root (who reads anything) in a child that dropped to `nobody`."""
    if not as_nobody:
        with pytest.raises(AudioError) as e:
            probe(path)
        return e.value.reason
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        reason = "no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            probe(path)
        except AudioError as e:
            reason = e.reason
        except BaseException as e:
            reason = repr(e)
        os.write(write, reason.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    return os.read(read, 1000).decode()


# 12. Out-of-range settings are refused when the config is built: exit 2, before any work.


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: TrainConfig(epochs=0), r"epochs must be at least 1 .*Found: 0"),
        (lambda: TrainConfig(epochs=-3), r"epochs must be at least 1 .*Found: -3"),
        (lambda: TrainConfig(batch_size=0), "batch_size must be at least 1. Found: 0"),
        (lambda: TrainConfig(lr=-1.0), r"lr must be positive .*Found: -1.0"),
        (lambda: TrainConfig(lr=float("nan")), r"lr must be positive .*Found: nan"),
        (lambda: TrainConfig(plateau_factor=1.5), r"plateau_factor must be in \(0, 1\)"),
        (lambda: TrainConfig(grad_clip=0.0), "grad_clip must be positive. Found: 0.0"),
        (lambda: TrainConfig(weight_decay=float("nan")), "weight_decay must be >= 0. Found: nan"),
        (lambda: TrainConfig(aux_weight=-0.1), "aux_weight must be >= 0. Found: -0.1"),
        (lambda: AugmentConfig(noise_std=-0.1), "noise_std must be >= 0"),
        (lambda: PrepareConfig(device="tpu"), "device must be auto, cpu, cuda, cuda:N or mps. Found: 'tpu'"),
        (lambda: PrepareConfig(mel_backend="librosa"), "mel_backend must be"),
        (lambda: LabelConfig(device="cuda:x"), "device must be"),
        (lambda: LabelConfig(shard_index=5, shard_count=4), r"Found: 5/4"),
        (lambda: LabelConfig(window_s=-2.0), r"need window_s >= 1.0 \(seconds\). Found: -2.0"),
        (lambda: LabelConfig(hop_s=0.0), r"need 0 < hop_s <= window_s"),
        (lambda: AudioConfig(sample_rate=1), "sample_rate must be at least 4000 Hz"),
    ],
)
def test_config_ranges(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("job", "sets", "match"),
    [
        ("train-all", ["train.epochs=-1"], "epochs must be at least 1"),
        ("train-all", ["device=tpu"], "device must be"),
        ("label-folder", ["shard_index=5", "shard_count=4"], "Found: 5/4"),
        ("label-folder", ["window_s=-2.0"], "need window_s >= 1.0"),
    ],
)
def test_bad_values_are_bad_specs(job: str, sets: list[str], match: str, tmp_path: Path) -> None:
    from sononet.cli.batch import cli

    args = [job, "--print-spec", "--out", str(tmp_path)] + [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and match in result.output, result.output


def test_train_all_epochs_zero_is_refused_not_defaulted() -> None:
    from sononet.cli.train import experiment_config

    kw = {"data": None, "out": None, "models": "cnn", "w2v2": "auto", "epochs": 0, "batch_size": 32, "folds": 1,
          "split": "speaker", "seed": 0, "device": "cpu", "fresh": False, "class_weights": False,
          "intensity_aux": False, "speed_perturb": False, "tempo_perturb": False, "pitch_perturb": False}  # fmt: skip
    with pytest.raises(ValueError, match="epochs must be at least 1 .*Found: 0"):
        experiment_config(**kw)


# 13. A .txt list loses only its line endings.


def test_txt_list_keeps_spaces_in_names(audio: Path, tmp_path: Path) -> None:
    (tmp_path / " lead.wav").write_bytes((audio / "a.wav").read_bytes())
    (tmp_path / "files.txt").write_text(" lead.wav\r\n# a comment\n   \nb.wav \n")
    paths, _ = list_inputs(tmp_path / "files.txt")
    assert paths == [str(tmp_path / " lead.wav"), str(tmp_path / "b.wav ")]


# Decisions: the rules below are choices, each tested as chosen.


def test_one_hertz_header_is_refused_before_resampling(tmp_path: Path) -> None:
    sf.write(tmp_path / "slow.wav", np.full(100, 0.1, np.float32), 1, subtype="PCM_16")  # 100 s at 1 Hz
    with pytest.raises(AudioError, match="corrupt: sample rate 1 Hz is below the 4000 Hz minimum"):
        probe(tmp_path / "slow.wav")


def test_hidden_and_part_files_are_counted_as_ignored(audio: Path, tmp_path: Path) -> None:
    for name in ("a.wav", ".b.wav", "c.wav.part", "notes.md"):
        (tmp_path / name).write_bytes((audio / "a.wav").read_bytes())
    assert list_inputs(tmp_path) == ([str(tmp_path / "a.wav")], 3)


def test_sigterm_writes_a_failed_event(tmp_path: Path, monkeypatch) -> None:
    import signal

    from sononet.cli import batch

    def killed(job: str, cfg: object, progress: bool) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def fallback(signum: int, frame: object) -> None:  # the old code has no handler: fail, don't die
        raise RuntimeError("SIGTERM reached the default handler")

    monkeypatch.setattr(batch, "execute", killed)
    previous = signal.signal(signal.SIGTERM, fallback)
    try:
        result = CliRunner().invoke(batch.cli, ["prepare", "--out", str(tmp_path), "--set", "out=shards"])
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 143, result.output
    events = [json.loads(x) for x in (tmp_path / "shards" / "events.jsonl").read_text().splitlines()]
    assert [e.get("event") for e in events] == ["start", "failed"] and "SIGTERM" in events[-1]["msg"]
    assert restored is fallback
