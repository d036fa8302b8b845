"""`python -m chatbot.demo.train` from an installed package never overwrites the demo model it ships: without
--out it refuses in one line (a source checkout, where the shipped weights are made, keeps the default)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from chatbot.demo.training.run import CHAT_WEIGHTS
from chatbot.demo.training.runs import refuse_installed_weights


def parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="python -m chatbot.demo.train")


def test_an_installed_package_needs_out_to_train(tmp_path: Path, capsys) -> None:
    installed = tmp_path / "site-packages"  # no pyproject.toml above the package: installed, not a checkout
    installed.mkdir()
    with pytest.raises(SystemExit) as ended:
        refuse_installed_weights(parser(), CHAT_WEIGHTS, CHAT_WEIGHTS, checkout=installed)
    assert ended.value.code == 2
    said = capsys.readouterr().err
    assert "--out is needed" in said and str(CHAT_WEIGHTS) in said and "--model ./my-demo" in said


def test_another_out_or_a_source_checkout_trains(tmp_path: Path) -> None:
    installed = tmp_path / "site-packages"
    installed.mkdir()
    refuse_installed_weights(parser(), tmp_path / "mine", CHAT_WEIGHTS, checkout=installed)
    refuse_installed_weights(parser(), CHAT_WEIGHTS, CHAT_WEIGHTS)  # this checkout: the shipped weights are made here
    assert (Path(__file__).resolve().parents[1] / "pyproject.toml").is_file()


def test_both_trainers_ask_before_anything_is_trained(tmp_path: Path, monkeypatch, capsys) -> None:
    from chatbot.demo.training import retrieval_run, run, runs

    original = runs.refuse_installed_weights
    for module in (run, retrieval_run):
        monkeypatch.setattr(module, "refuse_installed_weights",
                            lambda parser, out, shipped: original(parser, out, shipped, checkout=tmp_path))
        monkeypatch.setattr(module, "train", lambda *a, **k: pytest.fail("trained without --out"))
        with pytest.raises(SystemExit):
            module.main([])
        assert "--out is needed" in capsys.readouterr().err
