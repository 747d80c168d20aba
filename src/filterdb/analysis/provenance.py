"""What a drift result was computed with: the floor convention, precision, bins, range,
weights and depth bins (docs/method.md, section 4)."""
from __future__ import annotations

from ..kernels import hist as _hist
from .context import DEPTH_BIN

__all__ = ["FLOOR_RULE", "DEPTH_RULE", "provenance", "provenance_text", "weights_name"]

FLOOR_RULE = ("np.histogram(c, bins, range, density=True); empty bins of the density = "
              "float32 eps; then h / h.sum() (the published notebook)")
DEPTH_RULE = "pd.cut(conv_depth_norm, np.arange(0, 1.1, 0.1), include_lowest=True)"


def weights_name(weights) -> str:
    """``"evr"`` / ``"equal"`` as given, ``"custom"`` for 9 numbers."""
    return weights if isinstance(weights, str) else "custom"


def provenance(bins, range_, range_fixed, weights_name, weights, precision, by=None) -> dict:
    """The floor convention, the precision of the filters, the bins, the range (and whether
    it was fixed or the selection's global min and max), the component weights, and for
    ``by`` = ``depth_bin`` the rule of the depth bins."""
    d = {"floor": _hist.FLOOR, "floor_eps": _hist.EPS, "floor_rule": FLOOR_RULE,
         "precision": precision, "bins": int(bins), "range": [float(v) for v in range_],
         "range_source": "fixed" if range_fixed else "global min and max of the selection",
         "weights": weights_name, "weight_values": [float(v) for v in weights]}
    if by == DEPTH_BIN:
        d["depth_bins"] = DEPTH_RULE
    return d


def provenance_text(prov: dict) -> str:
    """One line for people: ``70 bins over [lo, hi] (global), weights evr, float32, ..."""
    lo, hi = prov["range"]
    src = "fixed" if prov["range_source"] == "fixed" else "global"
    return (f"{prov['bins']} bins over [{lo:.4g}, {hi:.4g}] ({src} range), weights "
            f"{prov['weights']}, precision {prov['precision']}, empty bins: float32 eps on "
            f"the density ({prov['floor']} floor, as the notebook)")
