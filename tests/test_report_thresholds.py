"""The prose of the reports and the CLI is formatted from the thresholds in use (issue 14,
item 5): a database report, a ``check --html`` page and the ``check`` / ``health`` texts
built with non-default thresholds carry those numbers and none of the defaults."""
from __future__ import annotations

import re

import numpy as np
import pytest

from filterdb.cli import main
from filterdb.health import HealthThresholds, model_health
from filterdb.readers import read_model
from filterdb.report.database_report import build_report
from filterdb.report.model_report import write_check_html
from filterdb.store import init_database
from test_report_meaning import population

T = HealthThresholds(sparsity_eps=0.03, random_margin=0.07, low_diversity_H=0.61,
                     sparse_S=0.33, poor_share=0.37, alpha=0.09)
OPTS = ["--eps", "0.03", "--random-margin", "0.07", "--low-diversity-h", "0.61",
        "--sparse-s", "0.33", "--poor-share", "0.37", "--alpha", "0.09"]
D = HealthThresholds()
LE, GE, MINUS = r"(?:<|&lt;)", r"(?:>=|≥|&gt;=)", r"(?:-|−)"


def phrases(t: HealthThresholds) -> dict:
    """Where each threshold is stated in the prose (the legend and the rule texts)."""
    return {
        "sparsity_eps": rf"\|w\| {LE} {t.sparsity_eps:g} \* max\|W\|",
        "sparse_S": rf"S {GE} {t.sparse_S:g}(?!\d)",
        "low_diversity_H": rf"H {LE} {t.low_diversity_H:g}(?!\d)",
        "random_margin": rf"TH\(n\) {MINUS} {t.random_margin:g}(?!\d)",
        "alpha": rf"p {GE} {t.alpha:g}(?!\d)",
        "poor_share": rf"up to {t.poor_share:.0%}",
    }


def visible(html: str) -> str:
    """The page's text: no scripts, styles, embedded images or tags."""
    for pat in (r"<script.*?</script>", r"<style.*?</style>", r'data:image/[^"\']+'):
        html = re.sub(pat, " ", html, flags=re.DOTALL)
    return re.sub(r"<[^>]+>", " ", html)


def assert_in_use(text: str):
    for name, pat in phrases(T).items():
        assert re.search(pat, text), f"{name} {getattr(T, name)} not stated"
    for name, pat in phrases(D).items():
        assert not re.search(pat, text), f"default {name} {getattr(D, name)} stated"
    for default in ("0.14", "0.02"):  # the default sparse S and margin: nowhere at all
        assert not re.search(rf"(?<![\d.]){re.escape(default)}(?!\d)", text), default


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("thresholds") / "db"
    db = init_database(p)
    try:
        for m, meta in population():
            db.add_model(m, meta)
    finally:
        db.close()
    return p


def test_database_report_states_the_thresholds_in_use(db_path, tmp_path):
    out = tmp_path / "report.html"
    build_report(db_path, out, columns=("task",), ridge_columns=("task",), thresholds=T,
                 quiet=True, model_figures=1)
    text = visible(out.read_text(encoding="utf-8"))
    assert_in_use(text)
    assert "sparse threshold S = 0.33" in text  # the depth figure's caption


@pytest.fixture
def npz_model(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "model.npz"
    np.savez(p, **{"conv1.weight": rng.standard_normal((16, 3, 3, 3)).astype(np.float32),
                   "conv2.weight": (rng.standard_normal((24, 16, 3, 3))
                                    * (rng.random((24, 16, 1, 1)) < 0.6)).astype(np.float32)})
    return p


def test_check_page_states_the_thresholds_in_use(npz_model, tmp_path):
    model = read_model(npz_model)
    df, summary = model_health(model, T)
    out, _ = write_check_html(tmp_path / "page.html", model, df, summary, thresholds=T)
    assert_in_use(visible(out.read_text(encoding="utf-8")))


def test_check_and_health_texts_state_the_thresholds_in_use(npz_model, db_path, capsys):
    assert main(["check", "--no-reference", *OPTS, str(npz_model)]) in (0, 3)
    assert_in_use(capsys.readouterr().out)
    assert main(["health", str(db_path), *OPTS]) == 0
    assert_in_use(capsys.readouterr().out)
