"""Secrets: the master key from the environment or secret.key, sealing, and the unified key."""

from __future__ import annotations

import os
import stat
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.shell.secrets import (
    KEY_FILE,
    SecretsError,
    Vault,
    load_master_key,
    new_unified_key,
    unified_key_matches,
)

HEX_KEY = "0123456789abcdef" * 4
CANNOT_DECRYPT = (
    "cannot decrypt a stored secret with this encryption key: "
    "the key changed, or the database belongs to another key"
)
LENGTH = "must be 64 hexadecimal characters (32 bytes); it has {} characters"
NOT_HEX = (
    "must be 64 hexadecimal characters (32 bytes); it contains characters that are not hexadecimal"
)

VAULT = Vault(bytes(range(32)))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the master key from ENCRYPTION_KEY ---------------------------------------------------------


def test_env_key_is_decoded_and_no_file_is_written(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert load_master_key(data_dir, HEX_KEY) == bytes.fromhex(HEX_KEY)
    assert load_master_key(data_dir, HEX_KEY.upper()) == bytes.fromhex(HEX_KEY)
    assert load_master_key(data_dir, f"  {HEX_KEY}\n") == bytes.fromhex(HEX_KEY)
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("value", "length"),
    [("abc", 3), (HEX_KEY + "0", 65), (HEX_KEY[:-2], 62), ("é" * 10, 10)],
)
def test_env_key_of_the_wrong_length_says_how_long_it_is(
    tmp_path: Path, value: str, length: int
) -> None:
    with pytest.raises(SecretsError) as caught:
        load_master_key(tmp_path, value)
    assert str(caught.value) == "ENCRYPTION_KEY " + LENGTH.format(length)
    assert value not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "g" + HEX_KEY[1:],  # a letter past f
        HEX_KEY[:31] + " " + HEX_KEY[32:],  # an inner space, which bytes.fromhex would take
        HEX_KEY[:-1] + "é",
        "0x" + HEX_KEY[2:],
    ],
)
def test_env_key_with_other_characters_says_so_without_echoing_it(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(SecretsError) as caught:
        load_master_key(tmp_path, value)
    message = str(caught.value)
    assert message == "ENCRYPTION_KEY " + NOT_HEX
    assert value not in message
    assert HEX_KEY[2:40] not in message


@pytest.mark.parametrize("unset", [None, "", "  "])
def test_an_unset_or_empty_env_key_falls_back_to_the_key_file(
    tmp_path: Path, unset: str | None
) -> None:
    key = load_master_key(tmp_path, unset)
    assert (tmp_path / KEY_FILE).read_text() == key.hex() + "\n"


# --- the master key from secret.key -------------------------------------------------------------


def test_a_generated_key_file_is_private_in_a_private_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    key = load_master_key(data_dir, None)
    assert len(key) == 32
    assert mode(data_dir) == 0o700
    assert mode(data_dir / KEY_FILE) == 0o600
    assert (data_dir / KEY_FILE).read_text() == key.hex() + "\n"
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temporary file left


def test_the_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o277)  # would leave the directory unwritable and the file read-only
    try:
        load_master_key(tmp_path / "data", None)
    finally:
        os.umask(previous)
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / KEY_FILE) == 0o600


def test_an_existing_data_directory_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o755)
    (tmp_path / "data").chmod(0o755)
    load_master_key(tmp_path / "data", None)
    assert mode(tmp_path / "data") == 0o755


def test_loading_again_gives_the_same_key(tmp_path: Path) -> None:
    first = load_master_key(tmp_path, None)
    assert load_master_key(tmp_path, None) == first
    assert load_master_key(tmp_path, None) != load_master_key(tmp_path / "other", None)


def test_a_hand_written_key_file_is_read(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text(HEX_KEY.upper() + "\r\n")
    assert load_master_key(tmp_path, None) == bytes.fromhex(HEX_KEY)


def test_the_environment_wins_over_the_key_file(tmp_path: Path) -> None:
    load_master_key(tmp_path, None)
    assert load_master_key(tmp_path, HEX_KEY) == bytes.fromhex(HEX_KEY)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "it has 0 characters"),
        (HEX_KEY[:40].encode(), "it has 40 characters"),
        (("z" * 64).encode(), "it contains characters that are not hexadecimal"),
        (b"\xff" * 64, "it contains characters that are not hexadecimal"),
    ],
)
def test_a_malformed_key_file_is_named_and_not_quoted(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(content)
    with pytest.raises(SecretsError) as caught:
        load_master_key(tmp_path, None)
    message = str(caught.value)
    assert message == f"{path} must hold 64 hexadecimal characters (32 bytes); {problem}"
    if content:
        assert content.decode("utf-8", errors="replace") not in message
    assert path.read_bytes() == content  # never replaced: it may have sealed secrets


def test_losing_the_race_to_create_the_key_file_reads_the_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def link_after_another_process(source: Path, target: Path) -> None:
        Path(target).write_text(HEX_KEY + "\n")  # the other process finished first
        raise FileExistsError(target)

    monkeypatch.setattr(os, "link", link_after_another_process)
    assert load_master_key(tmp_path, None) == bytes.fromhex(HEX_KEY)
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]


def test_without_hard_links_the_key_file_is_written_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: Path, target: Path) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    key = load_master_key(tmp_path, None)
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]
    assert mode(tmp_path / KEY_FILE) == 0o600
    monkeypatch.undo()
    assert load_master_key(tmp_path, None) == key


def test_an_unreadable_key_file_is_named(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).mkdir()
    with pytest.raises(SecretsError, match=f"^cannot read {tmp_path / KEY_FILE}: "):
        load_master_key(tmp_path, None)


# --- sealing ------------------------------------------------------------------------------------


@given(secret=st.text(), key_id=st.text(max_size=20), provider=st.text(max_size=20))
def test_unseal_opens_what_seal_sealed(secret: str, key_id: str, provider: str) -> None:
    blob = VAULT.seal(key_id, provider, secret)
    assert VAULT.unseal(key_id, provider, blob) == secret
    assert len(blob) == 12 + len(secret.encode()) + 16


def test_the_blob_holds_no_plaintext() -> None:
    secret = "gsk_" + "A" * 40
    assert secret.encode() not in VAULT.seal("k_1", "groq", secret)


def test_every_seal_draws_a_fresh_nonce() -> None:
    blobs = {VAULT.seal("k_1", "groq", "the same secret") for _ in range(50)}
    assert len(blobs) == 50
    assert len({blob[:12] for blob in blobs}) == 50


def test_another_master_key_cannot_open_a_blob() -> None:
    blob = VAULT.seal("k_1", "groq", "secret")
    with pytest.raises(SecretsError) as caught:
        Vault(bytes(32)).unseal("k_1", "groq", blob)
    assert str(caught.value) == CANNOT_DECRYPT


@pytest.mark.parametrize(
    ("key_id", "provider"),
    [("k_2", "groq"), ("k_1", "cerebras"), ("groq", "k_1"), ("", "groq"), ("k_1", "")],
)
def test_a_blob_moved_to_another_key_or_provider_does_not_open(key_id: str, provider: str) -> None:
    blob = VAULT.seal("k_1", "groq", "secret")
    with pytest.raises(SecretsError, match=f"^{CANNOT_DECRYPT}$"):
        VAULT.unseal(key_id, provider, blob)


def test_associated_data_cannot_be_shifted_between_fields() -> None:
    blob = VAULT.seal("b", "a\x00", "secret")
    with pytest.raises(SecretsError):
        VAULT.unseal("\x00b", "a", blob)


@pytest.mark.parametrize("damage", ["flip", "truncate", "short", "empty"])
def test_a_damaged_blob_does_not_open(damage: str) -> None:
    blob = VAULT.seal("k_1", "groq", "secret")
    damaged = {
        "flip": blob[:-1] + bytes([blob[-1] ^ 1]),
        "truncate": blob[:-1],
        "short": blob[:27],
        "empty": b"",
    }[damage]
    with pytest.raises(SecretsError, match=f"^{CANNOT_DECRYPT}$"):
        VAULT.unseal("k_1", "groq", damaged)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_vault_needs_a_32_byte_key(size: int) -> None:
    with pytest.raises(ValueError, match=f"not {size}$"):
        Vault(bytes(size))


def test_a_vault_does_not_show_its_key() -> None:
    vault = Vault(bytes.fromhex(HEX_KEY))
    assert HEX_KEY not in repr(vault)
    assert "hidden" in repr(vault)


# --- the unified key ----------------------------------------------------------------------------

URL_SAFE = frozenset(string.ascii_letters + string.digits + "-_")


def test_a_unified_key_is_the_prefix_and_32_url_safe_random_bytes() -> None:
    key = new_unified_key()
    assert key.startswith("freellm-")
    body = key.removeprefix("freellm-")
    assert len(body) == 43  # ceil(32 * 8 / 6): 32 bytes of base64 without padding
    assert set(body) <= URL_SAFE


def test_unified_keys_differ() -> None:
    assert len({new_unified_key() for _ in range(100)}) == 100


def test_the_unified_key_matches_itself_only() -> None:
    key = new_unified_key()
    assert unified_key_matches(key, key)
    assert unified_key_matches(key, "".join(list(key)))  # equal, not the same object
    assert not unified_key_matches(key[:-1], key)
    assert not unified_key_matches(key + "x", key)
    assert not unified_key_matches(key[:-1] + ("A" if key[-1] != "A" else "B"), key)
    assert not unified_key_matches(new_unified_key(), key)
    assert not unified_key_matches("freellm-é", key)


@pytest.mark.parametrize("given_key", [None, ""])
def test_a_missing_key_never_matches(given_key: str | None) -> None:
    assert not unified_key_matches(given_key, new_unified_key())
    assert not unified_key_matches(given_key, "")
