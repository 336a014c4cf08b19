"""One manifest over RAVDESS and nEMO and speaker-disjoint folds within each corpus.

    python results/joint-ravdess-nemo/make_data.py ../shared/data runs/joint-data

writes ``manifest.csv`` (both corpora, the 5 classes they share, absolute paths, a ``corpus``
column), ``manifest-ravdess.csv`` (RAVDESS alone, for the single-corpus model on the same folds),
``nemo-<speaker>.csv`` (each nEMO speaker alone, to score the RAVDESS-only model on it) and
``folds/fold_N/`` train/test lists in EmoBox's format, which ``--split emobox:DIR`` reads: fold k
tests nEMO speaker k and every fifth RAVDESS actor from actor k + 1, so every fold holds out
speakers of both corpora. ``--folds-run 1,2 --run-dir folds2`` also writes only those folds into
``folds2/``, for a run of fewer folds (the committed run's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

SHARED = ["ANG", "FEA", "HAP", "NEU", "SAD"]  # the classes RAVDESS and nEMO both have
FOLDS = 5  # nEMO has 5 speakers: one held out per fold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder holding ravdess/ and nemo/ (each with manifest.csv)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--folds-run", default="", help="comma-separated folds (from 1) to also write to --run-dir")
    ap.add_argument("--run-dir", default="folds-run", help="folder (under out) for the --folds-run subset")
    args = ap.parse_args()
    parts = []
    for corpus in ("ravdess", "nemo"):
        m = pd.read_csv(args.data / corpus / "manifest.csv")
        m = m[m.label.isin(SHARED)]
        paths = [str((args.data / corpus / p).resolve()) for p in m.path]
        parts.append(pd.DataFrame({"path": paths, "label": m.label.to_numpy(), "speaker": m.speaker.to_numpy(),
                                   "sex": m.sex.to_numpy(), "corpus": corpus}))  # fmt: skip
    man = pd.concat(parts, ignore_index=True)
    if man.groupby("speaker").corpus.nunique().max() > 1:
        raise SystemExit("a speaker id occurs in both corpora: prefix the ids with the corpus first")
    args.out.mkdir(parents=True, exist_ok=True)
    man.to_csv(args.out / "manifest.csv", index=False)
    man[man.corpus == "ravdess"].to_csv(args.out / "manifest-ravdess.csv", index=False)
    nemo = sorted(man[man.corpus == "nemo"].speaker.unique())
    actors = sorted(man[man.corpus == "ravdess"].speaker.unique())
    for spk in nemo:
        man[man.speaker == spk].to_csv(args.out / f"nemo-{spk}.csv", index=False)
    run = {int(k) for k in args.folds_run.split(",") if k.strip()}
    for k in range(FOLDS):
        test = {nemo[k]} | {a for i, a in enumerate(actors) if i % FOLDS == k}
        for root in ["folds"] + ([args.run_dir] if k + 1 in run else []):
            folder = args.out / root / f"fold_{k + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            for part in ("train", "test"):
                rows = man[man.speaker.isin(test) == (part == "test")]
                lines = [json.dumps({"key": Path(p).stem, "wav": p, "emo": y}) for p, y in zip(rows.path, rows.label)]
                (folder / f"joint_{part}_fold_{k + 1}.jsonl").write_text("\n".join(lines) + "\n")
        print(f"fold {k + 1}: test speakers {', '.join(sorted(test))}")


if __name__ == "__main__":
    main()
