"""Every help page, run as a user runs it (a subprocess), lists its own options and nothing of other
commands; each command takes only its own options, and refuses another's naming the commands that take
it; the reference's do-nothing flags say what to use instead."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from cyclegan.cli import build_parser
from cyclegan.commands import COMMANDS
from cyclegan.core.config import ANY, FIELDS

CLI = [sys.executable, "-m", "cyclegan.cli"]


def pages() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every parser of the command line by its words: (), ("train",), ("data", "synth"), ..."""
    found = {}

    def walk(words: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        found[words] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(words + (name,), sub)
    walk((), build_parser())
    return found


def listed_options(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings a help page must show: every action not hidden, by its first long name."""
    return [next(o for o in a.option_strings if o.startswith("--")) for a in parser._actions
            if a.option_strings and a.help != argparse.SUPPRESS and a.option_strings != ["-h", "--help"]]


def test_every_help_page_works_and_lists_its_own_options_only():
    every = pages()
    assert set(w[0] for w in every if w) == set(COMMANDS)
    assert ("data", "synth") in every and ("cluster", "watch-preemption") in every

    def show(words):
        return words, subprocess.run([*CLI, *words, "--help"], capture_output=True, text=True, timeout=120)
    with ThreadPoolExecutor(2) as pool:
        done = dict(pool.map(show, every))
    for words, parser in every.items():
        run = done[words]
        page = " ".join(["cyclegan", *words])
        assert run.returncode == 0, f"{page} --help: {run.stderr[-2000:]}"
        assert run.stdout.startswith(f"usage: {page}"), run.stdout[:200]
        for option in listed_options(parser):
            assert option in run.stdout, f"{page} --help does not list {option}"
        if len(words) == 1 and words[0] in ANY:  # the commands that take the schema's options
            own = {k for k, f in FIELDS.items() if words[0] in f.metadata["commands"]}
            shown = set(re.findall(r"^  --(\w+)", run.stdout, re.M))  # the options' own lines
            foreign = sorted(shown & (set(FIELDS) - own))
            assert not foreign, f"{page} --help lists options of other commands: {foreign}"
    # Each command's own options, as the schema says: a few of each kind.
    train, translate, export = done[("train",)].stdout, done[("translate",)].stdout, done[("export",)].stdout
    assert "--lambda_A" in train and "--num_workers" in train and "--jpeg_quality" not in train
    assert "--jpeg_quality" in translate and "--lambda_A" not in translate and "--export_tolerance" not in translate
    assert "--export_tolerance" in export and "--n_epochs" not in export
    assert "--results_dir" in done[("test",)].stdout and "--lr" not in done[("test",)].stdout
    assert "--metric" in done[("eval",)].stdout and "--matrix" in done[("bench",)].stdout


@pytest.mark.parametrize("argv, message", [
    (["train", "--jpeg_quality", "50"], "--jpeg_quality is an option of cyclegan translate, not of cyclegan train"),
    (["train", "--export_tolerance=1"], "--export_tolerance is an option of cyclegan export, not of cyclegan train"),
    (["test", "--lambda_A", "5"], "--lambda_A is an option of cyclegan train, cyclegan bench, not of cyclegan test"),
    (["export", "--generator", "g", "--out", "o", "--no-tensorboard"],
     "--tensorboard is an option of cyclegan train, cyclegan bench, not of cyclegan export"),
    (["translate", "--generator", "g", "--input", "i", "--output", "o", "--results_dir", "r"],
     "--results_dir is an option of cyclegan test, not of cyclegan translate"),
    (["train", "--no_such_option", "1"], "unrecognized arguments: --no_such_option 1"),
])
def test_an_option_of_another_command_is_refused_naming_the_commands_that_take_it(argv, message, capsys):
    from cyclegan.cli import main
    with pytest.raises(SystemExit) as refused:  # argparse's way out: usage and one error line
        main(argv)
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"cyclegan {argv[0]}: error: {message}"


def test_reference_flags_that_do_nothing_here_say_what_to_use_instead(tmp_path, caplog):
    from cyclegan.commands.options import from_args
    parse = build_parser().parse_args
    with caplog.at_level("WARNING", logger="cyclegan"):
        cfg = from_args(parse(["train", "--display_id", "1", "--no_html", "--gpu_ids", "0,1", "--dataset_mode",
                               "unaligned"]))
    lines = [r.getMessage() for r in caplog.records]
    assert cfg.device == "cuda:0"  # as the reference: the first id is this process's GPU
    assert any(line.startswith("--display_id does nothing here: TensorBoard replaces it") for line in lines)
    assert any(line.startswith("--no_html does nothing here: TensorBoard replaces it") for line in lines)
    assert any(line.startswith("--dataset_mode does nothing here: the unaligned layout") for line in lines)
    assert any("--gpu_ids 0,1: this process trains on cuda:0 only; for one process per GPU use --num_workers 2 "
               "--use_gpu" in line for line in lines)
    caplog.clear()
    with caplog.at_level("WARNING", logger="cyclegan"):
        assert from_args(parse(["test", "--gpu_ids", "-1"])).device == "cpu"
    assert [r.getMessage() for r in caplog.records] == ["--gpu_ids -1: use --device cpu (this run does)"]
    # A command line without them says nothing.
    caplog.clear()
    with caplog.at_level("WARNING", logger="cyclegan"):
        from_args(parse(["train", "--name", "quiet"]))
    assert not caplog.records
