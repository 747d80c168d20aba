"""One engine option set (cli._common.add_engine_options) on every command that runs the
engine, and one cache flag: ``--recompute``, with ``--no-cache`` a hidden alias."""
from __future__ import annotations

import argparse
import json

import pytest

from filterdb.cli import build_parser
from filterdb.cli._common import ENGINE_OPTIONS, show_progress

# commands that run passes over a database; report has no cache flag (it reuses the cache)
ENGINE_COMMANDS = {"pca": True, "drift": True, "analyze": True, "health": True, "check": True,
                   "report": False}


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _options(p) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


def test_engine_commands_have_the_one_option_set():
    subs = _subparsers()
    for name, cache in ENGINE_COMMANDS.items():
        opts = _options(subs[name])
        assert set(ENGINE_OPTIONS) <= opts, (name, set(ENGINE_OPTIONS) - opts)
        assert ("--recompute" in opts) == cache and ("--no-cache" in opts) == cache, name


def test_any_command_with_engine_options_has_all_of_them():
    for name, p in _subparsers().items():
        opts = _options(p)
        if opts & {"--engine", "--scheduler", "--workers"}:
            assert set(ENGINE_OPTIONS) <= opts, name
            assert name in ENGINE_COMMANDS, f"{name}: add it to ENGINE_COMMANDS"


@pytest.mark.parametrize("cmd", ["drift", "health", "analyze", "pca"])
@pytest.mark.parametrize("flag", ["--recompute", "--no-cache"])
def test_no_cache_is_an_alias_of_recompute(cmd, flag):
    args = build_parser().parse_args([cmd, "DB", flag])
    assert args.recompute is True
    assert build_parser().parse_args([cmd, "DB"]).recompute is False


def test_no_cache_is_hidden():
    help_text = _subparsers()["drift"].format_help()
    assert "--recompute" in help_text and "--no-cache" not in help_text


def test_quiet_json_csv_turn_progress_off():
    p = build_parser()
    assert show_progress(p.parse_args(["health", "DB"]))
    for extra in (["--quiet"], ["--json"], ["--csv"]):
        assert not show_progress(p.parse_args(["health", "DB", *extra])), extra
    assert not show_progress(p.parse_args(["report", "DB", "--quiet"]))


def _run_json(capsys, argv):
    from filterdb.cli import main

    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("argv", [["drift", "{db}", "--by", "task"], ["health", "{db}"]])
def test_no_cache_and_recompute_give_the_same_result(npz_db, capsys, argv):
    """End to end on the shared small database: the alias runs the same computation."""
    argv = [a.format(db=npz_db) for a in argv] + ["--json", "--workers", "1"]
    cached = _run_json(capsys, argv)
    recomputed = _run_json(capsys, argv + ["--recompute"])
    aliased = _run_json(capsys, argv + ["--no-cache"])
    assert recomputed == aliased == cached
    models = _run_json(capsys, ["ls", npz_db, "--json"])
    assert sorted(m["model"] for m in models) == ["alpha", "beta", "gamma"]
