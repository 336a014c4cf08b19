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

Audio sources: a CutSet is data, so it follows :mod:`sononet.sources`: every audio source of a
cut (its recording's, a mixed cut's tracks', a reverb's impulse response...) must be a local
regular ``file`` or bytes held in the manifest (``memory``). A ``command`` source (lhotse runs it
in a shell), a ``url`` (lhotse fetches it) or any other type makes the cut a ``not_local`` row
before lhotse touches it, and the cuts lhotse does decode go through its libsndfile backend
only: lhotse's default backends run ``sph2pipe``/``ffmpeg`` in a shell built from the file name.
Relative source paths are tried against the current folder (lhotse's rule), then against the
manifest's folder, and handed to lhotse resolved.

Audio files: SonoNet's prepare decodes whole files, so a cut that is exactly one whole
single-channel audio file (start 0, the recording's duration, no transforms) points at that
file. Any other cut (a segment of a longer recording, one channel of several, a speed-
perturbed or mixed cut, audio held in memory) is decoded once by lhotse and written to
``<audio cache>/<cut id>-<hash>.wav`` (float WAV; the cache is ``<manifest dir>/.sononet-audio``
when that folder is writable, see :func:`sononet.sources.audio_cache`), the hash covering the
cut's description and its source files' size and mtime, so a changed cut never reuses a stale file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from pathlib import Path

from sononet.corpus.clips import Clip, Corpus, label_text
from sononet.errors import AudioError, ErrorRow, NotFoundError, UserError
from sononet.sources import audio_cache, local_file, regular_input

LOCAL_TYPES = ("file", "memory")  # every other lhotse source type runs a command or reaches the network
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
    if not p.name.lower().endswith(SUFFIXES) or not p.is_file():
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
    regular_input(path, "lhotse manifest")
    kind = manifest_kind(path)
    if kind in ("recordings", "supervisions"):
        raise ValueError(
            f"{path} is a lhotse {kind} manifest; SonoNet reads cuts: make them with "
            "CutSet.from_manifests(recordings=..., supervisions=...).to_file('cuts.jsonl.gz')"
        )
    return CutSet.from_jsonl_lazy(path) if ".jsonl" in path.name.lower() else CutSet.from_file(path)


def _custom_label(custom: dict | None) -> object:
    """The first non-blank label field of a custom dict, raw; None when there is none."""
    for key in LABEL_KEYS:
        value = (custom or {}).get(key)
        if value is not None and str(value).strip():
            return value
    return None


def _label(cut) -> tuple[str | None, str]:
    """(label, why not): one label from the supervisions' custom fields, else the cut's."""
    raw = [v for sup in cut.supervisions if (v := _custom_label(sup.custom)) is not None]
    raw = raw or [v for v in [_custom_label(getattr(cut, "custom", None))] if v is not None]
    if not raw:
        return None, f"no supervision or cut custom field {'/'.join(LABEL_KEYS)}"
    found = set()
    for value in raw:
        label, why = label_text(value)
        if label is None:
            return None, why
        found.add(label)
    if len(found) > 1:
        return None, f"supervisions disagree: {sorted(found)}"
    return found.pop(), ""


def _one(values) -> str | None:
    vals = {str(v).strip() for v in values if v is not None and str(v).strip()}
    return vals.pop() if len(vals) == 1 else None


def _sources(node: object) -> list[dict]:
    """Every audio source anywhere in a cut's description: its recording's, a mixed cut's tracks',
    a transform's (a reverb's impulse response), so none reaches lhotse's loaders unchecked."""
    found: list[dict] = []
    if isinstance(node, dict):
        sources = node.get("sources")
        if isinstance(sources, list):
            found += [src for src in sources if isinstance(src, dict)]
        for key, value in node.items():
            if key != "sources":
                found += _sources(value)
    elif isinstance(node, list):
        for value in node:
            found += _sources(value)
    return found


def _checked(cut, base: Path):
    """The cut with every file source checked and resolved (``sononet.sources``), or AudioError.

    Raises before lhotse reads anything: a ``command`` or ``url`` source (or any type but file and
    memory) is ``not_local``; a file source must be a local regular file.
    """
    from lhotse import CutSet

    desc = cut.to_dict()
    for src in _sources(desc):
        kind, source = src.get("type"), src.get("source")
        if kind not in LOCAL_TYPES:
            shown = source if isinstance(source, str) else type(source).__name__
            raise AudioError(
                "not_local", f"a {kind!r} audio source ({str(shown)[:200]!r}): SonoNet never runs or fetches it"
            )
        if kind == "file":
            src["source"] = str(local_file(source, Path.cwd(), base))  # lhotse's rule, then the manifest's folder
    return next(iter(CutSet.from_dicts([desc])))


def _whole_file(cut) -> Path | None:
    """The audio file when the cut is exactly one whole single-channel file, else None."""
    from lhotse import MonoCut

    if not isinstance(cut, MonoCut) or not cut.has_recording:
        return None
    rec = cut.recording
    if len(rec.sources) != 1 or rec.sources[0].type != "file" or rec.transforms or rec.num_channels != 1:
        return None
    if abs(cut.start) > 1e-6 or abs(cut.duration - rec.duration) > 1.0 / rec.sampling_rate + 1e-6:
        return None
    return Path(rec.sources[0].source)  # checked and resolved by _checked


def _materialise(cut, cache: Path) -> Path:
    """Decode a checked cut with lhotse's libsndfile backend and write it once as float WAV."""
    import soundfile as sf
    from lhotse.audio.backend import LibsndfileBackend, audio_backend

    desc = json.dumps(cut.to_dict(), sort_keys=True, default=str)
    stamps = []
    for src in _sources(cut.to_dict()):
        if src.get("type") == "file":
            st = Path(src["source"]).stat()
            stamps.append(f"{src['source']}:{st.st_size}:{st.st_mtime_ns}")
    digest = hashlib.sha1("\n".join([desc, *stamps]).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", cut.id)[:100]
    out = cache / f"{safe}-{digest}.wav"
    if out.is_file():
        return out
    with audio_backend(LibsndfileBackend()):  # never the shell-running sph2pipe/ffmpeg backends
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
    cache: Path | None = None  # chosen when the first cut needs it
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
            cut = _checked(cut, base)
        except AudioError as e:
            errors.append(ErrorRow(where, e.reason, e.detail))
            continue
        try:
            audio = _whole_file(cut)
            if audio is None:
                cache = cache or audio_cache(base)
                audio = _materialise(cut, cache)
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
