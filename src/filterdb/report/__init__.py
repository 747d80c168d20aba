"""Self-contained HTML reports (:class:`Report`): figures embedded, tables sortable."""
from __future__ import annotations

from .html import Report, Section, cell_text, cell_value, markdown

__all__ = ["Report", "Section", "cell_text", "cell_value", "markdown"]
