"""The label output contract: names that query, the same names as predictions.parquet, loud failures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner
from test_label import LABELS, save_tiny, tone

from sononet.cli import main
from sononet.label import LabelConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("contract")
    model = save_tiny(base / "cnn" / "model")
    audio = base / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", tone(1.5), 16_000)
    sf.write(audio / "b.flac", tone(4.0, 22_050, f0=210), 22_050)
    (audio / "broken.wav").write_bytes(b"")
    return model, audio


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--mel-backend", "torchaudio"])
    return result.exit_code, result.output


def test_table_strict_and_relative_input(setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, audio = setup
    monkeypatch.chdir(audio.parent)
    out = tmp_path / "l.parquet"
    code, text = invoke(["label", "audio", "--model", str(model), "--out", str(out)])
    assert code == 0, text
    lines = text.split("file/s]")[-1].splitlines()  # after the progress bar
    assert lines[0].split() == ["file", "pred", "confidence"], text
    assert lines[3].split() == ["audio/broken.wav", "-", "-", "error:", "zero_byte"]
    assert lines[1].split()[0] == "audio/a.wav" and lines[1].split()[1] in LABELS
    df = pd.read_parquet(out)
    assert all(Path(p).is_absolute() and ".." not in p for p in df.path)
    code, text = invoke(["label", "audio", "--model", str(model), "--out", str(tmp_path / "s.parquet"), "--strict"])
    assert code == 1 and "1 file(s) could not be labelled (--strict)" in text
    code, text = invoke(["label", "audio/a.wav", "--model", str(model), "--out", str(tmp_path / "ok.parquet"),
                         "--strict"])  # fmt: skip
    assert code == 0, text


def test_out_must_be_parquet(setup, tmp_path: Path) -> None:
    model, audio = setup
    code, text = invoke(["label", str(audio), "--model", str(model), "--out", str(tmp_path / "x.csv")])
    assert code == 2 and "out must be a .parquet file" in text and "x.csv" in text
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.parts").exists()
    with pytest.raises(ValueError, match="Found: 'labels.jsonl'"):
        LabelConfig(input="x", model="y", out="labels.jsonl")


@pytest.mark.checkout  # reads the repository, not the installed package
def test_columns_shared_with_predictions_and_documented_query_runs(setup, tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    model, audio = setup
    out = tmp_path / "q.parquet"
    assert invoke(["label", str(audio), "--model", str(model), "--out", str(out)])[0] == 0
    cols = set(pd.read_parquet(out).columns)
    predictions = set(pd.read_parquet(ROOT / "results" / "demo" / "predictions.parquet").columns)
    shared = {"pred", *[f"prob_{lab}" for lab in LABELS]}
    assert shared <= cols and {"pred", "prob_ANG", "prob_SAD"} <= predictions
    assert "window" not in cols and "label" not in cols  # reserved in SQL / ambiguous with the true label
    assert {"train_corpus", "train_split", "pretrained", "model_id"} <= cols
    parts = out.with_suffix(".parts") / "part-*.parquet"
    query = f"select pred, count(*) from '{parts}' where scope = 'file' group by 1"
    rows = duckdb.sql(query).fetchall()
    assert sum(n for _, n in rows) == 3 and (None, 1) in rows  # the error row has no pred
    doc = (ROOT / "sononet" / "label" / "__init__.py").read_text()
    assert "where scope = 'file'" in doc
