"""lhotse: a CutSet manifest (``cuts.jsonl``, ``cuts.jsonl.gz``, ``.json``), as written by ``CutSet.to_file``.

About the format: one JSON object per cut (``MonoCut``: ``id``, ``start``, ``duration``,
``channel``, a ``recording`` with ``sources`` and ``sampling_rate``, and ``supervisions``,
each with ``speaker``, ``gender`` and a ``custom`` dict). lhotse's recipes that carry emotion
put it in the supervision's ``custom["emotion"]`` (e.g. ``lhotse/recipes/daily_talk.py``);
SonoNet reads the label from ``custom["emotion"]``, ``["emo"]`` or ``["label"]`` of the
supervisions, then of the cut. Supervisions that disagree, or none with a label, make an
``unknown_label`` row. Speaker and gender come from the supervisions. Clip ids are cut ids.
RecordingSet and SupervisionSet manifests alone are refused with what to do (make cuts
with ``CutSet.from_manifests(recordings, supervisions).to_file("cuts.jsonl.gz")``).
Reading needs ``pip install 'sononet[interop]'`` (``lhotse``).

Audio files: SonoNet's prepare decodes whole files, so a cut that is exactly one whole
single-channel audio file (start 0, the recording's duration, no transforms) points at that
file. Any other cut (a segment of a longer recording, one channel of several, a speed-
perturbed or mixed cut, audio held in memory or fetched by a command) is decoded once by
lhotse itself and written to ``<manifest dir>/.sononet-audio/<cut id>-<hash>.wav`` (float
WAV), the hash covering the cut's description and its source files' size and mtime, so a
changed cut never reuses a stale file. Relative source paths are tried against the current
folder (lhotse's rule), then against the manifest's folder.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from pathlib import Path

from sononet.corpus.clips import Clip, Corpus
from sononet.errors import ErrorRow, NotFoundError, UserError

CACHE_DIR = ".sononet-audio"
LABEL_KEYS = ("emotion", "emo", "label")
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
_CUT_TYPES = ("MonoCut", "MultiCut", "MixedCut", "PaddingCut")


def _first_record(path: Path) -> dict | None:
    """The first manifest object of a JSONL(.gz) file, or None if it is not one."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as f:  # type: ignore[operator]
            line = f.readline(1 << 20)
        record = json.loads(line)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, EOFError):
        return None
    return record if isinstance(record, dict) else None


def manifest_kind(path: str | Path) -> str | None:
    """'cuts', 'recordings' or 'supervisions' for a lhotse JSONL(.gz) manifest, else None."""
    p = Path(path)
    if not p.is_file() or not p.name.lower().endswith(SUFFIXES):
        return None
    rec = _first_record(p)
    if rec is None:
        return None
    if rec.get("type") in _CUT_TYPES or ("supervisions" in rec and "duration" in rec):
        return "cuts"
    if "sources" in rec and "sampling_rate" in rec:
        return "recordings"
    if "recording_id" in rec and "duration" in rec:
        return "supervisions"
    return None


def _load(path: Path):
    try:
        from lhotse import CutSet
    except ImportError as e:
        raise UserError(f"{path} is a lhotse manifest; reading it needs `pip install 'sononet[interop]'`") from e
    kind = manifest_kind(path)
    if kind in ("recordings", "supervisions"):
        raise ValueError(
            f"{path} is a lhotse {kind} manifest; SonoNet reads cuts: make them with "
            "CutSet.from_manifests(recordings=..., supervisions=...).to_file('cuts.jsonl.gz')"
        )
    return CutSet.from_jsonl_lazy(path) if ".jsonl" in path.name.lower() else CutSet.from_file(path)


def _label(cut) -> tuple[str | None, str]:
    """(label, why not): one label from the supervisions' custom fields, else the cut's."""
    found = set()
    for sup in cut.supervisions:
        custom = sup.custom or {}
        value = next((custom[k] for k in LABEL_KEYS if custom.get(k) is not None), None)
        if value is not None and str(value).strip():
            found.add(str(value).strip())
    if not found:
        custom = getattr(cut, "custom", None) or {}
        value = next((custom[k] for k in LABEL_KEYS if custom.get(k) is not None), None)
        if value is not None and str(value).strip():
            found.add(str(value).strip())
    if len(found) == 1:
        return found.pop(), ""
    if found:
        return None, f"supervisions disagree: {sorted(found)}"
    return None, f"no supervision or cut custom field {'/'.join(LABEL_KEYS)}"


def _one(values) -> str | None:
    vals = {str(v).strip() for v in values if v is not None and str(v).strip()}
    return vals.pop() if len(vals) == 1 else None


def _source_file(source: str, base: Path) -> Path | None:
    p = Path(source)
    for candidate in (p, base / p) if not p.is_absolute() else (p,):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _whole_file(cut, base: Path) -> Path | None:
    """The audio file when the cut is exactly one whole single-channel file, else None."""
    from lhotse import MonoCut

    if not isinstance(cut, MonoCut) or not cut.has_recording:
        return None
    rec = cut.recording
    if len(rec.sources) != 1 or rec.sources[0].type != "file" or rec.transforms or rec.num_channels != 1:
        return None
    if abs(cut.start) > 1e-6 or abs(cut.duration - rec.duration) > 1.0 / rec.sampling_rate + 1e-6:
        return None
    found = _source_file(rec.sources[0].source, base)
    if found is None:
        raise NotFoundError(f"audio file not found: {rec.sources[0].source}")
    return found


def _materialise(cut, base: Path, cache: Path) -> Path:
    """Decode the cut with lhotse and write it once as float WAV; raises on unreadable audio."""
    import soundfile as sf
    from lhotse import MonoCut

    desc = json.dumps(cut.to_dict(), sort_keys=True, default=str)
    stamps = []
    if isinstance(cut, MonoCut) and cut.has_recording:
        for src in cut.recording.sources:
            f = _source_file(src.source, base) if src.type == "file" else None
            if f is not None:
                st = f.stat()
                stamps.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
            if src.type == "file" and f is not None and not Path(src.source).is_file():
                cut = cut.with_recording_path_prefix(base)  # relative to the manifest, not the cwd
    digest = hashlib.sha1("\n".join([desc, *stamps]).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", cut.id)[:100]
    out = cache / f"{safe}-{digest}.wav"
    if out.is_file():
        return out
    audio = cut.load_audio()  # (channels, samples)
    if audio is None:
        raise NotFoundError(f"cut {cut.id} has no recording")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    sf.write(tmp, audio.T, int(cut.sampling_rate), subtype="FLOAT", format="WAV")
    os.replace(tmp, out)
    return out


def load_lhotse(path: str | Path) -> Corpus:
    """Read every cut of a lhotse CutSet manifest; unusable cuts become errors-table rows."""
    path = Path(path).resolve()
    base = path.parent
    cache = base / CACHE_DIR
    clips: list[Clip] = []
    errors: list[ErrorRow] = []
    seen: set[str] = set()
    for cut in _load(path):
        where = f"{path}:{cut.id}"
        if cut.id in seen:
            errors.append(ErrorRow(where, "duplicate", f"cut id {cut.id!r} is already taken; kept the first"))
            continue
        seen.add(cut.id)
        label, why = _label(cut)
        if label is None:
            errors.append(ErrorRow(where, "unknown_label", why))
            continue
        try:
            audio = _whole_file(cut, base) or _materialise(cut, base, cache)
        except FileNotFoundError as e:
            errors.append(ErrorRow(where, "missing", str(e)))
            continue
        except Exception as e:  # lhotse raises many types for audio it cannot read
            errors.append(ErrorRow(where, "corrupt", f"lhotse could not load the cut: {type(e).__name__}: {e}"))
            continue
        clips.append(
            Clip(
                clip_id=cut.id,
                path=str(audio),
                label=label,
                speaker=_one(s.speaker for s in cut.supervisions),
                sex=_one(s.gender for s in cut.supervisions),
                extra={"start": f"{cut.start:.3f}", "duration": f"{cut.duration:.3f}"},
            )
        )
    labels = sorted({c.label for c in clips})
    return Corpus(kind="lhotse", root=str(path), clips=clips, errors=errors, labels=labels)
