"""Secrets at rest and the unified key.

Provider keys are stored sealed with AES-256-GCM under one 32-byte master key. The master key comes
from ``ENCRYPTION_KEY`` (64 hexadecimal characters), else from ``<data-dir>/secret.key``, which is
generated on first use with mode 0600 and is never written into the database.

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, with a fresh random nonce per
seal. The key's id and provider are the associated data: a blob copied onto another key's row (or
another provider) fails authentication instead of quietly lending its secret to the wrong key.

The unified key, the one clients present to freellm, is ``freellm-`` followed by 32 random bytes in
URL-safe base64, and is compared in constant time.

Error tree::

    SecretsError    a malformed master key, an unreadable key file, or a blob this master key
                    cannot open; the message says which, and never contains a secret
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from pathlib import Path
from typing import Final

__all__ = [
    "KEY_FILE",
    "SecretsError",
    "Vault",
    "load_master_key",
    "new_unified_key",
    "unified_key_matches",
]

KEY_FILE: Final = "secret.key"
UNIFIED_PREFIX: Final = "freellm-"
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MASTER_KEY_BYTES: Final = 32

_HEX_KEY: Final = re.compile(r"[0-9a-fA-F]{64}")
_CANNOT_DECRYPT: Final = (
    "cannot decrypt a stored secret with this encryption key: "
    "the key changed, or the database belongs to another key"
)


class SecretsError(Exception):
    """What is wrong with the master key or a sealed secret. Never carries a secret value."""


# --- the master key -----------------------------------------------------------------------------


def load_master_key(data_dir: Path, env_value: str | None) -> bytes:
    """The 32-byte master key: from ``env_value`` (``ENCRYPTION_KEY``) when it is set and not
    empty, else from ``<data_dir>/secret.key``, generated on first use.

    Surrounding whitespace is ignored (a trailing newline in a file or a ``.env`` line). The data
    directory is created with mode 0700 when missing; a generated key file has mode 0600 from the
    moment it exists, and appears under its name only once it is complete.

    Raises :class:`SecretsError` when the value or the file does not hold exactly 64 hexadecimal
    characters, or when the file cannot be read or written; the message names the variable or the
    file, never its content.
    """
    if env_value is not None and env_value.strip():
        return _parse_hex_key(env_value, "ENCRYPTION_KEY must be")
    path = data_dir / KEY_FILE
    _make_private_dir(data_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _create_key_file(path)
    except OSError as exc:
        raise SecretsError(f"cannot read {path}: {exc.strerror}") from None
    return _parse_hex_key(raw.decode("utf-8", errors="replace"), f"{path} must hold")


def _parse_hex_key(value: str, subject: str) -> bytes:
    value = value.strip()
    expected = f"{subject} 64 hexadecimal characters ({MASTER_KEY_BYTES} bytes)"
    if len(value) != 2 * MASTER_KEY_BYTES:
        raise SecretsError(f"{expected}; it has {len(value)} characters")
    # bytes.fromhex would accept inner spaces; the pattern does not.
    if not _HEX_KEY.fullmatch(value):
        raise SecretsError(f"{expected}; it contains characters that are not hexadecimal")
    return bytes.fromhex(value)


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        return  # the user's own directory: its mode is theirs to choose
    except OSError as exc:
        raise SecretsError(f"cannot create the data directory {path}: {exc.strerror}") from None
    path.chmod(0o700)  # the umask may have taken bits away that the owner needs


def _create_key_file(path: Path) -> bytes:
    """Write a new key to ``path`` atomically, or read the one another process wrote first.

    The key goes to a private temporary file first and is then hard-linked to ``path``, which
    fails if ``path`` exists: a concurrent start never sees half a key, and never replaces a key
    that may already have sealed secrets.
    """
    key = secrets.token_bytes(MASTER_KEY_BYTES)
    content = (key.hex() + "\n").encode("ascii")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        try:
            _write_private(temporary, content)
            _publish(temporary, path, content)
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_dir(path.parent)  # the new name survives a power cut, like the key's bytes
    except FileExistsError:
        return load_master_key(path.parent, None)  # another process was first: use its key
    except OSError as exc:
        raise SecretsError(f"cannot create {path}: {exc.strerror}") from None
    return key


def _publish(temporary: Path, path: Path, content: bytes) -> None:
    """Give the complete key file its name; ``FileExistsError`` when the name is taken."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        # A file system without hard links: create the file in place, still exclusively.
        _write_private(path, content)


def _write_private(path: Path, content: bytes) -> None:
    """Create ``path`` (it must not exist) with mode 0600 and ``content``, or not at all."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # exactly 0600, whatever the umask
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)  # ours alone: O_EXCL created it
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- sealing ------------------------------------------------------------------------------------


class Vault:
    """Seals and opens provider secrets with one master key (AES-256-GCM)."""

    def __init__(self, master_key: bytes) -> None:
        """Raises ``ValueError`` unless ``master_key`` is 32 bytes (:func:`load_master_key` gives
        such keys; anything else is a broken caller)."""
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError(f"a master key has {MASTER_KEY_BYTES} bytes, not {len(master_key)}")
        # Imported here, not at module level: OpenSSL's bindings cost ~6.5 MB of RSS, and the
        # server never loads them (it opens secrets in a helper process: shell/vault_process.py).
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(master_key)

    def __repr__(self) -> str:
        return "Vault(<master key hidden>)"

    def seal(self, key_id: str, provider: str, secret: str) -> bytes:
        """``secret`` encrypted for the key ``key_id`` of ``provider``, under a fresh nonce."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(
            nonce, secret.encode("utf-8"), _associated(key_id, provider)
        )

    def unseal(self, key_id: str, provider: str, blob: bytes) -> str:
        """The secret that :meth:`seal` sealed for the same ``key_id`` and ``provider``.

        Raises :class:`SecretsError` when the blob does not open: another master key sealed it,
        it was sealed for another key id or provider, or it is damaged.
        """
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise SecretsError(_CANNOT_DECRYPT)
        from cryptography.exceptions import InvalidTag

        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        try:
            plain = self._aead.decrypt(nonce, sealed, _associated(key_id, provider))
        except InvalidTag:
            raise SecretsError(_CANNOT_DECRYPT) from None
        return plain.decode("utf-8")


def _associated(key_id: str, provider: str) -> bytes:
    # A JSON array keeps the fields apart whatever characters they hold.
    return json.dumps(["freellm-key", provider, key_id]).encode("utf-8")


# --- the unified key ----------------------------------------------------------------------------


def new_unified_key() -> str:
    """A fresh unified key: ``freellm-`` and 32 random bytes (43 URL-safe characters)."""
    return UNIFIED_PREFIX + secrets.token_urlsafe(32)


def unified_key_matches(given: str | None, expected: str) -> bool:
    """Whether a client's ``given`` key is ``expected``, in time that does not depend on where
    they differ. A missing or empty key, on either side, never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
