"""The command line as it stands: ``serve`` checks the config and says it cannot serve yet."""

import subprocess
import sys
from pathlib import Path

import pytest

from freellm.cli import NOT_YET, main


def test_serve_says_plainly_that_it_is_not_serving_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--data-dir", str(tmp_path)]) == NOT_YET
    out, err = capsys.readouterr()
    assert "14 providers" in out
    assert "1. google/gemini-2.5-flash" in out
    assert "not yet serving on http://127.0.0.1:3001/v1" in err


def test_serve_reads_the_config_in_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "freellm.toml").write_text(
        '[router]\nchain = ["groq/llama-3.3-70b-versatile"]\n', encoding="utf-8"
    )
    assert main(["serve", "--data-dir", str(tmp_path)]) == NOT_YET
    out, _ = capsys.readouterr()
    assert "1. groq/llama-3.3-70b-versatile" in out
    assert "2." not in out


def test_a_bad_config_names_the_file_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[[providers.groq.models]]\nid = 'x'\nrpm = -1\n", encoding="utf-8")
    assert main(["serve", "--config", str(config)]) == 2
    _, err = capsys.readouterr()
    assert f"{config}: providers.groq.models[0].rpm: must be an integer >= 0, got -1" in err


def test_the_console_script_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "freellm.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("freellm ")
