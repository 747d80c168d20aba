"""Layer health: sparsity, variance entropy, orthogonality and degeneration flags
(docs/method.md, section 5), per model and against random initialisations.

One assessment and one verdict (:mod:`.assess`) serve the model file (:mod:`.check`), the
database (:mod:`.database`: the metrics pass; :mod:`.table`: the per-layer table), the
summaries (:mod:`.summary`), the population (:mod:`.population`) and the reports."""
from __future__ import annotations

from .assess import (
                     RULES,
                     HealthThresholds,
                     assess,
                     assess_frame,
                     legend,
                     not_assessed_line,
                     paper_threshold,
                     verdict,
                     verdict_sentence,
)
from .baseline import DEFAULT_INITS, random_baseline
from .check import COLUMNS, FLAGS, layer_metrics, model_health
from .database import database_health
from .population import compare_to_population, population_bands
from .random_cache import install as _install_random_cache
from .summary import health_summary, model_summaries, summarise, summarise_groups

_install_random_cache()

__all__ = ["HealthThresholds", "layer_metrics", "model_health", "summarise", "assess",
           "assess_frame", "paper_threshold", "random_baseline", "DEFAULT_INITS", "COLUMNS",
           "FLAGS", "database_health", "health_summary", "summarise_groups",
           "compare_to_population", "population_bands", "legend", "not_assessed_line",
           "verdict", "verdict_sentence", "RULES", "model_summaries"]
