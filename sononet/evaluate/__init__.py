"""Evaluation: metrics with confidence intervals, tables, figures, baselines and the run report.

``write_evaluation(run_dir, predictions, labels, protocol, histories)`` is the entry point;
the pieces are importable for notebooks and other stages. Re-exports use ``name as name``
so the public surface is the import list itself, with no ``__all__`` to keep in step.
"""

from __future__ import annotations

from sononet.evaluate.baselines import SEED_ACCURACY as SEED_ACCURACY
from sononet.evaluate.baselines import crowd_baseline as crowd_baseline
from sononet.evaluate.baselines import load_voice_vote_sets as load_voice_vote_sets
from sononet.evaluate.baselines import seed_comparison as seed_comparison
from sononet.evaluate.metrics import HEADLINE as HEADLINE
from sononet.evaluate.metrics import aggregate_folds as aggregate_folds
from sononet.evaluate.metrics import calibration as calibration
from sononet.evaluate.metrics import compute_metrics as compute_metrics
from sononet.evaluate.predictions import check_predictions as check_predictions
from sononet.evaluate.report import write_evaluation as write_evaluation
from sononet.evaluate.tables import breakdown_table as breakdown_table
from sononet.evaluate.tables import markdown_table as markdown_table
