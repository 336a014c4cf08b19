"""How a set of numbers was made, declared once and carried by every table, plot, report and model.

The flags that decide a report's warnings (``synthetic``, ``speaker_disjoint``) are set by whoever
knows them (the corpus loader, the split), not read back out of the display strings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class CrossCorpus:
    """A model trained on one corpus, tested on every clip of another."""

    trained_on: str
    tested_on: str
    model_dir: str
    shared_labels: tuple[str, ...]
    label_map: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    corpus: str  # as every table names it: "cremad", "ravdess", "demo (synthetic)", "manifest:<path>"
    split: str  # the split in words, e.g. "speaker-disjoint (...)"
    synthetic: bool = False  # the generated demo corpus: its numbers say nothing about real speech
    speaker_disjoint: bool = True  # the split claims no test speaker is seen in training (checked on the data)
    folds: int = 1
    seed: int | None = None
    pretrained: dict[str, str] = field(default_factory=dict)  # model -> where its encoder came from
    profile: str | None = None  # demo | real: the training recipe
    device: str | None = None
    cross_corpus: CrossCorpus | None = None
    refit: bool = False  # the test split was scored by models refit on train + val (TrainConfig.refit)

    def line(self) -> str:
        """One line that says how the numbers were made: corpus, split, folds, seed, pretraining."""
        parts = [f"corpus={self.corpus}", f"split={self.split}", f"folds={self.folds}", f"seed={self.seed}"]
        if self.pretrained:
            parts.append("pretrained: " + "; ".join(f"{m}={n}" for m, n in sorted(self.pretrained.items())))
        if self.refit:
            parts.append("test: models refit on train+val for the epochs chosen on val")
        return "Protocol: " + " · ".join(parts)

    def pretrained_note(self, model: str) -> str:
        return str(self.pretrained.get(model, "-"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; what models, metrics.json and run.json store."""
        doc = asdict(self)
        if self.cross_corpus is not None:
            doc["cross_corpus"]["shared_labels"] = list(self.cross_corpus.shared_labels)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Protocol:
        """Read a stored protocol. Models saved before the flags were declared lack them: for those
        (only), they are derived from the corpus and split names as the reports then did."""
        known = {f.name for f in fields(cls)}
        if "corpus" not in doc or "split" not in doc:
            raise ValueError(
                f"a protocol must state corpus and split so every table says how its numbers were made. "
                f"Found keys: {sorted(doc)}"
            )
        kw = {k: v for k, v in doc.items() if k in known}
        kw.setdefault("synthetic", str(doc["corpus"]).lower().startswith("demo"))
        kw.setdefault("speaker_disjoint", str(doc["split"]).lower().startswith("speaker-disjoint"))
        if isinstance(kw.get("cross_corpus"), dict):
            cc = dict(kw["cross_corpus"])
            cc["shared_labels"] = tuple(cc.get("shared_labels", ()))
            kw["cross_corpus"] = CrossCorpus(**cc)
        kw["pretrained"] = dict(kw.get("pretrained") or {})
        return cls(**kw)
