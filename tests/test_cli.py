"""The command line: keys, the unified key and the chain, on a data dir of its own."""

import subprocess
import sys
from pathlib import Path

import pytest

from freellm.cli import main

SECRET = "gsk_live_very_secret_value_123456789"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ENCRYPTION_KEY", raising=False)
    monkeypatch.setenv("FREELLM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_keys_add_list_remove_never_print_the_secret(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "keys", "add", "groq", SECRET, "--label", "work")
    assert status == 0
    key_id = out.split()[1]
    assert key_id.startswith("k_")
    status, out, _ = run(capsys, "keys", "list")
    assert status == 0
    assert key_id in out
    assert "groq" in out
    assert "work" in out
    assert SECRET not in out
    assert SECRET.encode() not in (data_dir / "freellm.db").read_bytes()  # stored sealed
    assert (data_dir / "secret.key").stat().st_mode & 0o777 == 0o600
    status, out, _ = run(capsys, "keys", "remove", key_id)
    assert status == 0
    _, out, _ = run(capsys, "keys", "list")
    assert key_id not in out


def test_an_unknown_provider_is_refused_with_the_known_ones(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "keys", "add", "nosuch", SECRET)
    assert status == 2
    assert "unknown provider 'nosuch'" in err
    assert "groq" in err
    assert SECRET not in err


def test_token_is_stable_until_regenerated(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, first, _ = run(capsys, "token")
    _, again, _ = run(capsys, "token")
    _, new, _ = run(capsys, "token", "--regenerate")
    assert first == again
    assert first.startswith("freellm-")
    assert len(first.strip()) >= len("freellm-") + 43
    assert new != first


def test_chain_set_and_show(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, _ = run(
        capsys, "chain", "set", "groq/llama-3.3-70b-versatile", "google/gemini-2.5-flash"
    )
    assert status == 0
    _, out, _ = run(capsys, "chain", "show")
    assert out.splitlines() == [" 1. groq/llama-3.3-70b-versatile", " 2. google/gemini-2.5-flash"]
    status, _, err = run(capsys, "chain", "set", "groq/nope")
    assert status == 2
    assert "router.chain[0]" in err


def test_a_named_chain_is_set_and_shown_apart_from_autos(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "chain", "set", "--name", "coding", "groq/openai/gpt-oss-120b")
    assert status == 0, out
    _, out, _ = run(capsys, "chain", "show", "--name", "coding")
    assert out.splitlines() == [" 1. groq/openai/gpt-oss-120b"]
    _, auto, _ = run(capsys, "chain", "show")
    assert "groq/openai/gpt-oss-120b" not in auto.splitlines()[0]
    status, _, err = run(capsys, "chain", "show", "--name", "nothing")
    assert status == 1
    assert "no chain is named 'nothing'" in err
    status, _, err = run(capsys, "chain", "set", "--name", "Bad!", "groq/openai/gpt-oss-120b")
    assert status == 2
    assert "--name" in err
    status, _, err = run(capsys, "chain", "set", "--name", "coding", "groq/nope")
    assert status == 2
    assert "router.chains.coding[0]" in err


def test_a_malformed_encryption_key_stops_with_a_clear_message(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCRYPTION_KEY", "abc123")
    status, _, err = run(capsys, "keys", "list")
    assert status == 2
    assert "ENCRYPTION_KEY must be 64 hexadecimal characters" in err
    assert "abc123" not in err


def test_a_bad_config_names_the_file_and_the_key(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[[providers.groq.models]]\nid = 'x'\nrpm = -1\n", encoding="utf-8")
    status, _, err = run(capsys, "chain", "show", "--config", str(config))
    assert status == 2
    assert f"{config}: providers.groq.models[0].rpm: must be an integer >= 0, got -1" in err


def test_the_console_script_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "freellm.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("freellm ")


def test_a_key_of_a_native_dialect_provider_is_stored_and_listed(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "AIza-not-a-real-key-0123456789"
    status, out, err = run(capsys, "keys", "add", "google", secret)
    assert (status, err) == (0, "")
    assert out.startswith("added k_")
    status, out, _ = run(capsys, "keys", "list")
    assert status == 0
    assert "google" in out
    assert secret not in out


def test_an_encryption_key_that_cannot_open_the_secrets_stops_with_that_message(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCRYPTION_KEY", "ab" * 32)
    assert run(capsys, "keys", "add", "groq", SECRET)[0] == 0
    assert run(capsys, "token")[0] == 0
    monkeypatch.setenv("ENCRYPTION_KEY", "cd" * 32)
    status, out, err = run(capsys, "token")
    assert status == 2
    assert "cannot decrypt a stored secret with this encryption key" in err
    assert out == ""
