"""``filterdb zoo train``: populations of small CNNs trained offline on CPU, one
meta-parameter (data set, architecture family, width, depth, seed) varied at a time,
each saved beside its untrained twin, listed in ``OUT/manifest.csv``.

Needs the ``train`` extra (torch, mlxtend, scikit-image, scikit-learn); torch is
imported only when training starts.
"""
from .population import (
                         MANIFEST,
                         MANIFEST_COLUMNS,
                         PRESETS,
                         Config,
                         pending,
                         preset_configs,
                         read_manifest,
                         require_torch,
                         run,
                         train_config,
)

__all__ = ["MANIFEST", "MANIFEST_COLUMNS", "PRESETS", "Config", "pending", "preset_configs",
           "read_manifest", "require_torch", "run", "train_config"]
