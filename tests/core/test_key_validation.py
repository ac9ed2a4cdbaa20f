"""What a provider key's secret and label may hold (freellm.core.keys): a secret is visible
ASCII and always a valid header value; a label is one line of text; a refusal never quotes the
secret."""

from __future__ import annotations

import string
import unicodedata
from typing import Any

import h11
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from freellm.core.catalog import Catalog, ConfigError, apply_config
from freellm.core.keys import (
    MAX_LABEL,
    MAX_SECRET,
    Refused,
    clean_label,
    clean_secret,
    header_problem,
)

VISIBLE_ASCII = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
KEYS = st.text(VISIBLE_ASCII, min_size=1, max_size=200)
AROUND = st.text(st.sampled_from(" \t\r\n"), max_size=4)
# What must never be inside a secret: controls, spaces, anything past ASCII.
NOT_IN_A_KEY = st.characters(max_codepoint=0x20) | st.characters(min_codepoint=0x7F)


def header_ok(secret: str) -> bool:
    """Whether h11 (the transport's HTTP library) takes ``Bearer <secret>`` as a header, and
    the transport can encode it."""
    value = f"Bearer {secret}"
    try:
        value.encode("ascii")
        h11.Request(
            method="POST", target="/v1/chat/completions",
            headers=[("host", "provider.example"), ("authorization", value)],
        )  # fmt: skip
    except (UnicodeEncodeError, h11.LocalProtocolError):
        return False
    return True


@given(st.text(max_size=300))
@example("sk-abc\r\nX-Injected: 1")
@example("gsk_abc\x00def")
@example("key with spaces")
@example("clé-secrète")
@example("\u200bsk-zero-width")
def test_any_text_is_refused_or_a_key_that_is_a_valid_header(text: str) -> None:
    cleaned = clean_secret(text)
    if isinstance(cleaned, Refused):
        assert cleaned.field == "secret"
        return
    assert cleaned
    assert len(cleaned) <= MAX_SECRET
    assert all("!" <= c <= "~" for c in cleaned)
    assert header_ok(cleaned)
    assert cleaned == text.strip(" \t\r\n")


@given(AROUND, KEYS, AROUND)
def test_whitespace_around_a_key_is_stripped(before: str, key: str, after: str) -> None:
    assert clean_secret(before + key + after) == key


@given(KEYS, NOT_IN_A_KEY, KEYS)
def test_a_character_outside_visible_ascii_inside_a_key_is_refused_without_quoting_it(
    head: str, bad: str, tail: str
) -> None:
    cleaned = clean_secret(head + bad + tail)
    assert isinstance(cleaned, Refused)
    assert cleaned.field == "secret"
    assert f"at position {len(head) + 1}" in cleaned.message
    assert f"U+{ord(bad):04X}" in cleaned.message
    # Neither part of the secret is quoted (a part of a few characters could appear in the
    # message's own words by chance: only longer ones are checked).
    for part in (head, tail):
        if len(part) >= 6:
            assert part not in cleaned.message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("sk-abc\rdef", "a carriage return (U+000D)"),
        ("sk-abc\ndef", "a line feed (U+000A)"),
        ("sk-abc\r\nX-Injected: yes", "a carriage return (U+000D)"),
        ("sk-abc\x00def", "a NUL (U+0000)"),
        ("sk-abc\x1b[31mdef", "an escape (U+001B)"),
        ("sk-abc\x7fdef", "U+007F"),
        ("sk-abc def", "a space (U+0020)"),
        ("sk-abc\tdef", "a tab (U+0009)"),
        ("sk-abc\u00a0def", "U+00A0 (NO-BREAK SPACE)"),
        ("sk-abcédef", "U+00E9 (LATIN SMALL LETTER E WITH ACUTE)"),
        ("sk-abc\u200bdef", "U+200B (ZERO WIDTH SPACE)"),
        ("sk-\u0430bc", "U+0430 (CYRILLIC SMALL LETTER A)"),  # looks like an "a"
    ],
)
def test_header_breaking_and_invisible_characters_in_a_key_are_named(text: str, named: str) -> None:
    cleaned = clean_secret(text)
    assert isinstance(cleaned, Refused)
    assert named in cleaned.message
    assert "sk-abc" not in cleaned.message


@pytest.mark.parametrize("text", ["", "   ", "\r\n", "\t \n"])
def test_an_empty_key_is_refused(text: str) -> None:
    assert clean_secret(text) == Refused("secret", "The key is empty.")


def test_a_key_over_the_limit_is_refused() -> None:
    assert clean_secret("k" * MAX_SECRET) == "k" * MAX_SECRET
    refused = clean_secret("k" * (MAX_SECRET + 1))
    assert isinstance(refused, Refused)
    assert str(MAX_SECRET) in refused.message


@pytest.mark.parametrize(
    "key",
    [
        "gsk_0123456789abcdefABCDEF",
        "AIzaSyD-0123456789_abcdefghijklmnopq",
        "sk-or-v1-0123456789abcdef",
        "0123456789abcdef0123456789abcdef:cf-token_value",  # Cloudflare's account:token
        "nvapi-AbC~dEf+gh/ij=",
    ],
)
def test_keys_shaped_like_the_providers_are_accepted(key: str) -> None:
    assert clean_secret(key) == key


# --- labels --------------------------------------------------------------------------------------

LABEL_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf"))
    | st.sampled_from("\u200c\u200d"),
    max_size=MAX_LABEL,
)


@given(st.text(max_size=300))
@example("work\r\nadded abc (groq, forged)")
@example("\x1b[2J")
@example("\u202eevil")
def test_any_text_is_refused_or_a_label_of_one_line_that_the_store_can_hold(text: str) -> None:
    cleaned = clean_label(text)
    if isinstance(cleaned, Refused):
        assert cleaned.field == "label"
        return
    assert len(cleaned) <= MAX_LABEL
    assert cleaned == cleaned.strip()
    assert len(cleaned.splitlines()) <= 1
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in cleaned)  # C0, DEL, C1
    for char in cleaned:
        if unicodedata.category(char) == "Cf":  # invisible: only what writing is made of
            assert char in "\u200c\u200d" or 0xE0020 <= ord(char) < 0xE0080
    cleaned.encode("utf-8")  # no lone surrogate: SQLite stores it
    assert clean_label(cleaned) == cleaned


@given(LABEL_TEXT)
def test_text_without_control_or_format_characters_is_a_label(text: str) -> None:
    assert clean_label(text) == text.strip()


@pytest.mark.parametrize(
    ("label", "named"),
    [
        ("work\nforged line", "a line feed (U+000A)"),
        ("work\rforged", "a carriage return (U+000D)"),
        ("\x1b[31mred", "an escape (U+001B)"),
        ("nul\x00", "a NUL (U+0000)"),
        ("tab\there", "a tab (U+0009)"),
        ("bell\x07", "U+0007"),
        ("\u202eevil", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("zero\u200bwidth", "U+200B (ZERO WIDTH SPACE)"),
        ("line\u2028sep", "U+2028 (LINE SEPARATOR)"),
        ("half \ud83d", "U+D83D"),
    ],
)
def test_control_and_invisible_characters_in_a_label_are_named(label: str, named: str) -> None:
    cleaned = clean_label(label)
    assert isinstance(cleaned, Refused)
    assert cleaned.field == "label"
    assert named in cleaned.message


@pytest.mark.parametrize(
    "label",
    [
        "",
        "work",
        "Clé de Zoë",
        "東京チーム",
        "فريق",
        "नमस्ते",  # Devanagari, with combining marks
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467",  # joined by ZWJs
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # a tag flag
    ],
)
def test_unicode_text_is_a_label(label: str) -> None:
    assert clean_label(label) == label


def test_whitespace_around_a_label_is_stripped_and_a_long_one_refused() -> None:
    assert clean_label("  work  ") == "work"
    assert clean_label("x" * MAX_LABEL) == "x" * MAX_LABEL
    refused = clean_label("x" * (MAX_LABEL + 1))
    assert isinstance(refused, Refused)
    assert refused.field == "label"


# --- a provider's extra headers in the config ---------------------------------------------------


def provider_with(headers: dict[str, str]) -> dict[str, Any]:
    mine = {"dialect": "openai", "base_url": "http://127.0.0.1:9/v1", "headers": headers}
    return {"providers": {"mine": mine}}


@pytest.mark.parametrize(
    ("headers", "path", "named"),
    [
        ({"x-api-key": "cfg-key.1234\r\nX-Injected: 1"}, "'x-api-key'", "a carriage return"),
        ({"x-api-key": "cfg-key.1234\x00"}, "'x-api-key'", "a NUL (U+0000)"),
        ({"x-title": "Zoë's app"}, "'x-title'", "U+00EB"),
        ({"x title": "app"}, "'x title'", "a header name is"),
        ({"x-title\n": "app"}, "'x-title\\n'", "a header name is"),
        ({"": "app"}, "''", "a header name is"),
    ],
)
def test_a_config_header_that_would_break_the_request_is_refused_without_quoting_it(
    headers: dict[str, str], path: str, named: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        apply_config(Catalog(), provider_with(headers))
    assert refused.value.path == f"providers.mine.headers.{path}"
    assert named in refused.value.problem
    assert "cfg-key.1234" not in str(refused.value)


def test_config_headers_of_printable_ascii_are_kept() -> None:
    headers = {"HTTP-Referer": "https://example.org/app", "X-Title": "my app (v2); ok"}
    catalog = apply_config(Catalog(), provider_with(headers))
    assert dict(catalog.providers["mine"].headers) == headers


TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
NAMES = st.text(st.sampled_from(TOKEN_CHARS), min_size=1, max_size=20) | st.text(max_size=20)
VALUES = st.text(st.characters(max_codepoint=0x7F) | st.characters(), max_size=60)


@given(NAMES, VALUES)
@example("x-api-key", " cfg-key")
@example("x-api-key", "cfg-key\t")
@example("x-api-key", "cfg-key\r\nX-Injected: 1")
def test_a_config_header_that_is_not_refused_is_one_the_transport_can_send(
    name: str, value: str
) -> None:
    if header_problem(name, value) is not None:
        return  # stricter than HTTP is allowed (a tab, say); looser is not
    (name + value).encode("ascii")
    h11.Request(method="GET", target="/", headers=[("host", "p.example"), (name, value)])


def test_header_names_and_values_that_are_sent_every_day_pass() -> None:
    assert header_problem("HTTP-Referer", "https://example.org/") is None
    assert header_problem("X-Title", "my app (v2); ok") is None
    assert header_problem("anthropic-version", "2023-06-01") is None
