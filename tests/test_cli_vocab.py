"""One vocabulary for the command line (issue 19, items 4 and 5).

- ``--csv`` on every table command gives the rows and columns of its ``--json``: each CSV
  is parsed back and compared cell by cell with the JSON (null = empty cell, true/false,
  floats in full precision, lists joined by ';'), on a small database of onnx and npz files
  written here;
- the parser is walked: --json everywhere, --json/--csv exclusive on table commands,
  -o/--output on every command that writes a file, one engine option set, one cache flag,
  --jobs where files are read in processes;
- every ``filterdb ...`` line of the README parses with the real parser, and every
  subcommand appears in it.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from filterdb.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


# ---- fixtures: model files written here, a database built with the CLI ----------------------

def structured(c_out, c_in, rng, shift=0.0):
    """Trained-like 3x3 filters: a few dominant directions."""
    basis = np.linalg.qr(rng.standard_normal((9, 9)))[0]
    coef = rng.standard_normal((c_out * c_in, 9)) * np.array([1, .7, .5, .35, .25, .15, .1,
                                                              .07, .05])
    return (coef @ basis.T + shift).reshape(c_out, c_in, 3, 3).astype(np.float32)


def onnx_chain(path, weights):
    nodes, inits, x = [], [], "x"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"y{i}"], name=f"conv{i}",
                                      pads=[1, 1, 1, 1]))
        x = f"y{i}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, weights[0].shape[1], 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def run(capsys, *argv, code=0):
    got = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert got == code, (argv, out, err)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    rng = np.random.default_rng(19)
    out = {}
    for i in range(2):
        out[f"cls{i}"] = d / f"cls{i}.onnx"
        onnx_chain(out[f"cls{i}"], [structured(8, 4, rng), structured(16, 8, rng)])
        out[f"seg{i}"] = d / f"seg{i}.npz"
        np.savez(out[f"seg{i}"], **{"enc.conv1.weight": structured(8, 4, rng, 0.2),
                                    "enc.conv2.weight": structured(16, 8, rng, 0.2),
                                    "head.weight": rng.standard_normal((3, 16, 1, 1))})
    return d, out


@pytest.fixture(scope="module")
def db(files):
    d, f = files
    path = d / "db.filterdb"
    assert main(["add", str(path), str(f["cls0"]), str(f["cls1"]), "--meta",
                 "task=Classification", "--meta", "visual_category=natural", "--meta",
                 "x_seed=1", "--json"]) == 0
    assert main(["add", str(path), str(f["seg0"]), str(f["seg1"]), "--meta",
                 "task=Segmentation", "--meta", "visual_category=medical ct", "--meta",
                 "x_seed=2", "--json"]) == 0
    return path


# ---- comparing a CSV with the JSON it should equal -------------------------------------------

def parse_csv(text):
    r = list(csv.reader(io.StringIO(text)))
    return r[0], [dict(zip(r[0], row)) for row in r[1:]]


def same(cell: str, v) -> bool:
    """A CSV cell against its JSON value, decoded independently of the writer."""
    if v is None:
        return cell == ""
    if isinstance(v, bool):
        return cell == ("true" if v else "false")
    if isinstance(v, (int, float)):
        return cell != "" and float(cell) == float(v)
    if isinstance(v, list):
        return cell.split(";") == [str(x) for x in v] if v else cell == ""
    if isinstance(v, dict):
        return json.loads(cell) == v
    return cell == str(v)


def assert_rows(csv_text, rows, columns=None):
    """The CSV has the rows of ``rows`` (JSON objects), in order, with their columns."""
    header, got = parse_csv(csv_text)
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    assert header[:len(cols)] == cols if columns else header == cols
    assert len(got) == len(rows) and rows
    for g, r in zip(got, rows):
        for c in cols:
            assert same(g[c], r.get(c)), (c, g[c], r.get(c))


def both(capsys, *argv):
    return json.loads(run(capsys, *argv, "--json")), run(capsys, *argv, "--csv")


# ---- CSV against JSON, command by command ----------------------------------------------------

def test_ls_csv_equals_json(capsys, db):
    j, c = both(capsys, "ls", db)
    assert len(j) == 4 and {r["x_seed"] for r in j} == {1, 2}  # typed, from the test's --meta
    assert_rows(c, j)
    j, c = both(capsys, "ls", db, "--layers", "--where", "task = 'Segmentation'")
    assert len(j) == 6  # 2 npz x (2 conv 3x3 + 1 pointwise)
    assert_rows(c, j)
    j, c = both(capsys, "ls", db, "--columns")
    assert_rows(c, j)


def test_info_csv_equals_json(capsys, db):
    j, c = both(capsys, "info", db)
    header, rows = parse_csv(c)
    assert header == ["table", "key", "value"]
    back = {}
    for r in rows:  # rebuild the JSON object from the long table
        if r["table"] == "database":
            assert same(r["value"], j[r["key"]]), r
            back[r["key"]] = j[r["key"]]
        else:
            assert same(r["value"], j[r["table"]][r["key"]]), r
            back.setdefault(r["table"], {})[r["key"]] = j[r["table"]][r["key"]]
    assert back == j
    assert j["by_task"] == {"Classification": 2, "Segmentation": 2}


def test_pca_csv_equals_json(capsys, db):
    j, c = both(capsys, "pca", db, "--recompute")
    _, rows = parse_csv(c)
    assert len(rows) == 10 and rows[-1]["component"] == "mean"
    ev = np.asarray(j["explained_variance"])
    for k, r in enumerate(rows[:9]):
        assert int(r["component"]) == k
        assert float(r["explained_variance"]) == ev[k]
        assert float(r["evr"]) == j["explained_variance_ratio"][k]
        assert [float(r[f"w{i}"]) for i in range(9)] == j["components"][k]
    np.testing.assert_allclose([float(r["cumulative"]) for r in rows[:9]],
                               np.cumsum(j["explained_variance_ratio"]), rtol=1e-15)
    assert [float(rows[-1][f"w{i}"]) for i in range(9)] == j["mean"]
    # the eigen-decomposition itself, independently: numpy on the scaled filters
    from filterdb.store import open_database

    with open_database(db) as d:
        X = np.concatenate([c.filters for c in d.filters(copy=True)]).astype(np.float32)
    S = (X / np.abs(X).max(axis=1, keepdims=True)).astype(np.float64)
    var = np.sort(np.linalg.eigvalsh(np.cov(S, rowvar=False)))[::-1]
    np.testing.assert_allclose(var / var.sum(), j["explained_variance_ratio"], rtol=1e-6)


def test_drift_csv_equals_json(capsys, db):
    j, c = both(capsys, "drift", db, "--by", "task", "--no-cache")  # the hidden old name
    header, rows = parse_csv(c)
    assert header == ["task", "filters", "mean_drift", *j["groups"]]
    assert [r["task"] for r in rows] == j["groups"] == ["Classification", "Segmentation"]
    for i, r in enumerate(rows):
        assert int(r["filters"]) == j["sizes"][i]
        assert float(r["mean_drift"]) == j["mean_drift"][i]
        assert [float(r[g]) for g in j["groups"]] == j["matrix"][i]
    assert j["matrix"][0][1] > 0 and j["matrix"][0][0] == 0


def test_drift_model_csv_equals_json(capsys, db, files):
    _, f = files
    j, c = both(capsys, "drift", db, "--model", f["seg0"], "--by", "task")
    header, rows = parse_csv(c)
    assert header == ["model", "by", "group", "filters", "n_filters", "n_outside", "drift"]
    assert rows[0]["group"] == "" and float(rows[0]["drift"]) == j["drift"]
    assert [r["group"] for r in rows[1:]] == j["groups"]
    assert [float(r["drift"]) for r in rows[1:]] == j["group_drift"]
    assert [int(r["filters"]) for r in rows[1:]] == j["sizes"]
    assert all(int(r["n_filters"]) == j["n_filters"] == 160 for r in rows)


def test_noise_floor_csv_equals_json(capsys, db):
    argv = ("drift", db, "--by", "visual_category", "--noise-floor", "--permutations", "20")
    j, c = both(capsys, *argv)
    assert_rows(c, j["pairs"])
    assert len(j["pairs"]) == 1 and "p_holm" in j["pairs"][0]
    c = run(capsys, *argv, "--csv", "--table", "within")
    assert_rows(c, [{"visual_category": g, **w} for g, w in j["within"].items()])


def test_health_csv_equals_json(capsys, db):
    j = json.loads(run(capsys, "health", db, "--json"))
    assert run(capsys, "health", db, "--csv") == run(capsys, "health", db, "--csv",
                                                     "--table", "layers")
    for table in ("layers", "by_model", "by_task", "by_visual_category", "by_depth_bin"):
        assert_rows(run(capsys, "health", db, "--csv", "--table", table), j[table])
    assert len(j["layers"]) == 10 and len(j["by_model"]) == 4  # 8 3x3 + 2 pointwise


def test_check_and_inspect_csv_equal_json(capsys, files):
    _, f = files
    paths = [f["cls0"], f["seg1"]]
    j, c = both(capsys, "check", *paths)
    _, rows = parse_csv(c)
    assert [r["name"] for r in rows] == [o["path"] for o in j] == [str(p) for p in paths]
    for r, o in zip(rows, j):
        s = o["summary"]
        for col, key in (("layers", "n_layers"), ("assessed", "n_assessed"),
                         ("degenerated", "n_degenerated")):
            assert int(r[col]) == s[key]
        assert r["format"] == o["format"]
    # --layers: one row per layer, the models' JSON layers in order, every JSON column
    c = run(capsys, "check", *paths, "--csv", "--layers")
    flat = [dict(layer, model=o["path"]) for o in j for layer in o["layers"]]
    _, got = parse_csv(c)
    assert len(got) == len(flat) == 5  # 2 + 3 (the npz head is 1x1)
    for g, r in zip(got, flat):
        for k, v in r.items():
            assert same(g[k], v), (k, g[k], v)

    j, c = both(capsys, "inspect", *paths)
    _, rows = parse_csv(c)
    for r, o in zip(rows, j):
        assert r["name"] == o["path"] and r["format"] == o["format"]
        assert int(r["layers"]) == o["n_layers"] and int(r["filters_3x3"]) == o["filters_3x3"]
        assert int(r["conv_depths"]) == o["n_conv_depths"]
        assert r["depth_source"] == o["depth_source"]


def test_zoo_list_csv_equals_json(capsys):
    j, c = both(capsys, "zoo", "list")
    assert_rows(c, j)


def test_add_and_rm_csv_json(capsys, files, tmp_path):
    _, f = files
    j = json.loads(run(capsys, "add", tmp_path / "a", f["cls0"], f["seg0"], "--json"))
    c = run(capsys, "add", tmp_path / "b", f["cls0"], f["seg0"], "--csv")
    assert_rows(c, [dict(r, file=r["file"]) for r in j])
    j = json.loads(run(capsys, "rm", tmp_path / "a", "cls0", "--json"))
    assert j == [{"model": "cls0", "filters_freed": 32 + 128}]
    j = json.loads(run(capsys, "init", tmp_path / "c", "--json"))
    assert j["created"] and Path(j["path"]) == tmp_path / "c"


# ---- one vocabulary: output files, engine options --------------------------------------------

def test_check_html_output_spellings(capsys, files, tmp_path, monkeypatch):
    _, f = files
    out = tmp_path / "new.html"
    run(capsys, "check", f["cls0"], "--html", "-o", out)
    assert out.read_text().startswith("<!DOCTYPE html") or "<html" in out.read_text()[:500]
    out2 = tmp_path / "short.html"
    run(capsys, "check", f["cls0"], "--output", out2)  # -o alone implies --html
    assert out2.stat().st_size > 0
    old = tmp_path / "old.html"
    main(["check", str(f["cls0"]), "--html", str(old)])  # the old spelling: works, warns
    err = capsys.readouterr().err
    assert old.stat().st_size > 0 and "deprecated" in err and "--html -o" in err
    assert main(["check", str(f["cls0"]), "--html", str(old), "-o", str(out)]) == 2
    assert "two output files" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # --html alone: MODEL.html here
    run(capsys, "check", f["cls0"], "--html")
    assert (tmp_path / "cls0.html").stat().st_size > 0


def test_export_h5_output_spellings(capsys, db, tmp_path):
    pytest.importorskip("h5py")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    ja = json.loads(run(capsys, "export-h5", db, a, "--json"))  # positional, kept
    jb = json.loads(run(capsys, "export-h5", db, "-o", b, "--json"))
    assert a.read_bytes() == b.read_bytes() or ja["filters"] == jb["filters"] == 640
    assert main(["export-h5", str(db)]) == 2
    assert main(["export-h5", str(db), str(a), "-o", str(b)]) == 2
    assert "two output files" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["--engine", "local", "--scheduler", "tcp://127.0.0.1:8786"], "needs --engine dask"),
    (["--scheduler", "not an address"], "tcp://HOST:PORT"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_engine_options_checked(capsys, db, argv, msg):
    for cmd in (["pca", str(db)], ["health", str(db)], ["drift", str(db), "--by", "task"]):
        assert main(cmd + argv) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1


def test_recompute_and_no_cache_are_one_flag(capsys, db):
    a = json.loads(run(capsys, "drift", db, "--by", "task", "--recompute", "--json"))
    b = json.loads(run(capsys, "drift", db, "--by", "task", "--no-cache", "--json"))
    assert a["matrix"] == b["matrix"]
    ns = build_parser().parse_args(["health", "x", "--no-cache"])
    assert ns.recompute is True


def test_zoo_ingest_jobs(capsys, files, tmp_path, monkeypatch):
    """--jobs N reads in N processes and gives what the one-process ingest gives."""
    from filterdb import zoo

    _, f = files
    ids = [m.id for m in zoo.CATALOG[:2]]
    fake = {ids[0]: f["cls0"], ids[1]: f["seg0"]}
    monkeypatch.setattr(zoo, "fetch", lambda models, cache=None, log=None:
                        {m.id: fake[m.id] for m in models})
    one = json.loads(run(capsys, "zoo", "ingest", tmp_path / "one", *ids, "--json"))
    two = json.loads(run(capsys, "zoo", "ingest", tmp_path / "two", *ids, "--jobs", "2",
                         "--json"))
    assert one == two and [r["status"] for r in one] == ["added", "added"]
    j, c = both(capsys, "zoo", "fetch", *ids)
    assert_rows(c, [{"id": k, "path": v} for k, v in j.items()])
    c = run(capsys, "zoo", "ingest", tmp_path / "two", *ids, "-j", "2", "--csv")
    _, rows = parse_csv(c)
    assert [r["id"] for r in rows] == ids and {r["status"] for r in rows} == {"exists"}


# ---- the parser, walked -----------------------------------------------------------------------

def leaves(parser=None, prefix=()):
    """``{("zoo", "list"): parser, ...}``: every subcommand that runs something."""
    parser = parser or build_parser()
    out = {}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, p in a.choices.items():
                sub = leaves(p, prefix + (name,))
                out.update(sub or {prefix + (name,): p})
    return out


def options(p) -> dict:
    return {s: a for a in p._actions for s in a.option_strings}


TABLE_COMMANDS = {("ls",), ("info",), ("check",), ("health",), ("drift",), ("pca",),
                  ("zoo", "list"), ("inspect",), ("add",), ("zoo", "ingest"), ("zoo", "fetch"),
                  ("zoo", "train")}
WRITERS = {("report",), ("check",), ("export-h5",), ("zoo", "train")}
ENGINE_COMMANDS = {("drift",), ("pca",), ("health",), ("report",), ("check",)}
JOBS_COMMANDS = {("add",), ("zoo", "ingest"), ("zoo", "train")}


def test_parser_vocabulary():
    cmds = leaves()
    assert set(cmds) >= TABLE_COMMANDS | WRITERS | ENGINE_COMMANDS
    if ("analyze",) in cmds:  # the analysis command of the analyze branch runs passes
        ENGINE_COMMANDS.add(("analyze",))
    ref_engine = None
    for name, p in cmds.items():
        o = options(p)
        where = " ".join(name)
        assert "--json" in o, f"{where}: no --json"
        for s in o:  # long options are lowercase words joined by '-'
            assert re.fullmatch(r"-[a-z]|--[a-z0-9]+(-[a-z0-9]+)*", s), (where, s)
        assert not {"--out", "--outfile", "--output-file", "--nocache", "--n-jobs",
                    "--threads", "--cluster", "--address"} & set(o), where
        if "--csv" in o or name in TABLE_COMMANDS:
            assert "--csv" in o, f"{where}: prints a table but has no --csv"
            groups = [g for g in p._mutually_exclusive_groups
                      if {o["--json"], o["--csv"]} <= set(g._group_actions)]
            assert groups, f"{where}: --json and --csv are not exclusive"
        if name in WRITERS:
            assert "-o" in o and o["-o"] is o.get("--output"), f"{where}: no -o/--output"
        if "-o" in o or "--output" in o:
            assert o["-o"] is o["--output"], where
        eng = {s: o[s] for s in ("--engine", "--scheduler", "--workers") if s in o}
        if name in ENGINE_COMMANDS or eng:
            assert len(eng) == 3, f"{where}: engine options {sorted(eng)}"
            sig = {s: (a.choices and tuple(a.choices), a.metavar, a.default, a.type, a.dest)
                   for s, a in eng.items()}
            assert sig["--scheduler"][1] == "tcp://HOST:PORT"
            ref_engine = ref_engine or sig
            assert sig == ref_engine, where
        if "--no-cache" in o:  # one cache flag: --no-cache is a hidden alias of --recompute
            assert "--recompute" in o and o["--no-cache"].dest == o["--recompute"].dest
            assert o["--no-cache"].help == argparse.SUPPRESS
        if name in JOBS_COMMANDS:
            assert o.get("-j") is o.get("--jobs") is not None, f"{where}: no -j/--jobs"
            assert o["--jobs"].type is int


def test_cli_helpers_reject_misuse():
    """The shared helpers: --json and --csv together are refused by argparse."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ls", "x", "--json", "--csv"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["health", "x", "--csv", "--table", "by_nothing"])


# ---- the README's command list against the parser ------------------------------------------

def readme_commands():
    lines, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        line = line.strip().removeprefix("$ ")
        if inside and line.startswith("filterdb "):
            lines.append(line)
    return lines


def test_readme_lines_parse():
    lines = readme_commands()
    assert len(lines) >= 25
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        try:
            ns = build_parser().parse_args(argv)
        except SystemExit as e:  # argparse's own message is on stderr
            raise AssertionError(f"README line does not parse: {line}") from e
        assert getattr(ns, "func", None), line


def test_readme_lists_every_command():
    used = {tuple(t for t in shlex.split(line, comments=True)[1:3] if not t.startswith("-"))
            for line in readme_commands()}
    for name in leaves():
        assert any(u[:len(name)] == name for u in used), f"README has no 'filterdb {' '.join(name)}'"


def test_workers_reach_the_engine(capsys, db, monkeypatch):
    """--workers N is the engine's thread count (pca, drift, health), and the result does not
    depend on it."""
    import filterdb.engine as engine

    seen = []
    real = engine.get_engine

    def spy(name="local", scheduler=None, workers=2):
        if isinstance(name, str):  # an engine object passed on is not a new engine
            seen.append((name, scheduler, workers))
        return real(name, scheduler, workers)

    monkeypatch.setattr(engine, "get_engine", spy)
    for argv in (["pca", db], ["drift", db, "--by", "task"], ["health", db]):
        one = json.loads(run(capsys, *argv, "--recompute", "--workers", "1", "--json"))
        assert seen and seen[-1] == ("local", None, 1), argv
        three = json.loads(run(capsys, *argv, "--recompute", "--workers", "3", "--json"))
        assert seen[-1] == ("local", None, 3), argv
        assert one == three
