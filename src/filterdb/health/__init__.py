"""Layer health: sparsity, variance entropy, orthogonality and degeneration flags
(docs/method.md, section 5), per model and against random initialisations. One
assessment and one verdict (:mod:`.assess`) serve the model file, the database and the
reports."""
from __future__ import annotations

from .assess import (RULES, assess, legend, not_assessed_line, verdict_class,
                     verdict_sentence)
from .baseline import DEFAULT_INITS, random_baseline, simulated_threshold
from .check import (COLUMNS, FLAGS, HealthThresholds, flags, health_from_moments,
                    layer_metrics, model_health, randomness_threshold_for, summarise)
from .database import (compare_to_population, database_health, health_summary,
                       model_summaries, population_bands)
from .random_cache import install as _install_random_cache

_install_random_cache()

__all__ = ["HealthThresholds", "layer_metrics", "model_health", "summarise", "flags",
           "health_from_moments", "randomness_threshold_for", "random_baseline",
           "simulated_threshold", "DEFAULT_INITS", "COLUMNS", "FLAGS", "database_health",
           "health_summary", "compare_to_population", "population_bands", "assess",
           "legend", "not_assessed_line", "verdict_class", "verdict_sentence", "RULES",
           "model_summaries"]
