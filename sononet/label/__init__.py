"""Label any folder of audio with a trained model, in bounded memory, resumably, in shards.

::

    sononet label recordings/ --model runs/demo/cnn/model --out labels.parquet
    sononet label calls.txt --model runs/cremad/cnn/model --out calls.parquet --window 3 --hop 1.5
    sononet label manifest.csv --model M --out labels.parquet --shard 0/4   # one of 4 machines
    sononet label --merge --out labels.parquet                              # after all 4 finished

Input: a folder (walked recursively; files with an extension libsndfile knows), a ``.txt``
list of paths, a manifest CSV/TSV/Parquet with a ``path`` column (relative paths are relative
to the list), or one file. Any rate and channel count: decoding, downmix, resampling and the
bad-input checks are ``sononet.audio``'s, and the features are rebuilt from the model's saved
config (pad/trim kernel, log-mel, the training split's normalisation via ``model_inputs``).

Output rows: every input file gets exactly one ``scope = "file"`` row (``window_index`` -1),
``status`` ok, error (with the errors-table reason) or nonfinite (the model's output was no finite
probability distribution: no ``pred``, counted in the summary, failing ``--strict``), so
``count(file rows) == inputs``. The predicted class is ``pred`` with ``confidence`` and
``prob_<label>`` (the names predictions.parquet uses); ``model_id``, ``train_corpus``,
``train_split`` and ``pretrained`` say what the model learned from; ``embeddings = true`` adds the
pooled clip vector as a fixed-shape tensor column ``embedding``.
Paths are stored resolved and absolute.
A file longer than the window is streamed (never held whole) and cut into windows of
``window_s`` every ``hop_s``; the last window ends at the file's end, so every window is real
audio, and each gets its own row; the file row holds the mean of its windows' probabilities.
The hop defaults to the window (no overlap): every second is labelled once, so the file mean
weighs all of it equally and a long file costs one forward pass per 3 s; ``--hop`` smaller
gives smoother per-window tracks at proportional cost.
A file no longer than the window is one clip, padded as in training.

Parts ``<out>.parts/part-<shard>-<k>.parquet`` (``part_size`` files each) are written
atomically and listed in ``state-<shard>.json`` with a fingerprint of (file list, model,
window, shards); a rerun skips listed parts and refuses a changed fingerprint. The sorted
file list is dealt round-robin: shard i of n takes files i, i+n, ... (``--shard i/n``, or
``JOB_COMPLETION_INDEX``/``JOB_COMPLETIONS`` in a Kubernetes Indexed Job, or torchrun's
``RANK``/``WORLD_SIZE``). With ``--speaker-from`` each speaker group goes whole to one shard,
which first takes its groups' mean log-mels (saved as ``speakers-<shard>.json``), then labels
(:mod:`sononet.label.speakers`). Query without merging::

    duckdb -c "select pred, count(*) from 'labels.parts/part-*.parquet' where scope = 'file' group by 1"
"""

from sononet.label.config import LabelConfig as LabelConfig
from sononet.label.engine import MIN_WINDOW_S as MIN_WINDOW_S
from sononet.label.engine import resolve_window as resolve_window
from sononet.label.engine import score_sources as score_sources
from sononet.label.inputs import audio_suffixes as audio_suffixes
from sononet.label.inputs import list_inputs as list_inputs
from sononet.label.inputs import parse_shard as parse_shard
from sononet.label.inputs import resolve_shard as resolve_shard
from sononet.label.labeller import Labeller as Labeller
from sononet.label.labeller import model_id as model_id
from sononet.label.parts import FORMAT as FORMAT
from sononet.label.parts import format_summary as format_summary
from sononet.label.parts import label_files as label_files
from sononet.label.parts import merge as merge
from sononet.label.parts import parts_dir as parts_dir
from sononet.label.parts import schema as schema
from sononet.label.parts import summary_path as summary_path
from sononet.label.run import label as label
from sononet.label.windows import BLOCK_S as BLOCK_S
from sononet.label.windows import Source as Source
from sononet.label.windows import open_source as open_source
from sononet.label.windows import prefetch as prefetch
from sononet.label.windows import stream_windows as stream_windows
