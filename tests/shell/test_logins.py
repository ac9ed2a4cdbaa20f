"""Dashboard logins: signed sessions that a new unified key, logout or expiry ends; CSRF tokens;
failed logins limited per client."""

from __future__ import annotations

import attrs

from freellm.shell.logins import FAILURE_WINDOW_S, MAX_FAILURES, Login, Logins, Throttled

KEY = "freellm-" + "k" * 43


@attrs.define
class Setup:
    key: str = KEY
    now: float = 1_000_000.0
    hours: float = 1.0

    def logins(self) -> Logins:
        return Logins(
            lambda: self.key, clock=lambda: self.now, lifetime_s=lambda: self.hours * 3600
        )


def opened(logins: Logins, client: str = "127.0.0.1") -> Login:
    login = logins.login(KEY, client)
    assert isinstance(login, Login)
    return login


def test_the_unified_key_opens_a_session_that_the_cookie_then_carries() -> None:
    logins = Setup().logins()
    login = opened(logins)
    session = logins.session(login.cookie)
    assert session is not None
    assert session.csrf_token == login.csrf_token
    assert logins.csrf_ok(session, login.csrf_token)
    assert not logins.csrf_ok(session, None)
    assert not logins.csrf_ok(session, login.csrf_token[:-1] + "x")
    assert KEY not in login.cookie


def test_a_wrong_key_opens_nothing() -> None:
    logins = Setup().logins()
    assert logins.login("freellm-wrong", "1.2.3.4") is None
    assert logins.login("", "1.2.3.4") is None


def test_a_forged_or_mangled_cookie_is_no_session() -> None:
    logins = Setup().logins()
    login = opened(logins)
    session_id, expires, signature = login.cookie.split(".")
    for cookie in [
        None,
        "",
        "garbage",
        f"{session_id}.{int(expires) + 3600}.{signature}",  # a longer life, same signature
        f"other.{expires}.{signature}",
        f"{session_id}.{expires}.{signature[:-2]}",
        f"{session_id}..{signature}",
    ]:
        assert logins.session(cookie) is None, cookie


def test_a_session_ends_when_it_expires() -> None:
    setup = Setup(hours=2)
    logins = setup.logins()
    login = opened(logins)
    setup.now += 2 * 3600 - 1
    assert logins.session(login.cookie) is not None
    setup.now += 1
    assert logins.session(login.cookie) is None


def test_a_new_unified_key_ends_every_session() -> None:
    setup = Setup()
    logins = setup.logins()
    first, second = opened(logins), opened(logins)
    setup.key = "freellm-" + "n" * 43
    assert logins.session(first.cookie) is None
    assert logins.session(second.cookie) is None
    assert logins.login(KEY, "127.0.0.1") is None  # and the old key opens nothing new


def test_logout_ends_that_session_only_and_survives_a_restart() -> None:
    setup = Setup()
    logins = setup.logins()
    first, second = opened(logins), opened(logins)
    session = logins.session(first.cookie)
    assert session is not None
    logins.logout(session)
    assert logins.session(first.cookie) is None
    assert logins.session(second.cookie) is not None
    restarted = Logins(
        lambda: setup.key,
        clock=lambda: setup.now,
        lifetime_s=lambda: 3600.0,
        revoked=logins.revoked,
    )
    assert restarted.session(first.cookie) is None
    assert restarted.session(second.cookie) is not None
    setup.now += 3600
    assert logins.revoked == {}  # remembered only until it would have expired anyway


def test_failed_logins_are_limited_per_client_and_the_limit_passes() -> None:
    setup = Setup()
    logins = setup.logins()
    for _ in range(MAX_FAILURES):
        assert logins.login("wrong", "10.0.0.1") is None
    refused = logins.login(KEY, "10.0.0.1")  # even the right key waits
    assert refused == Throttled(setup.now + FAILURE_WINDOW_S)
    assert isinstance(logins.login(KEY, "10.0.0.2"), Login)  # another client is not held up
    setup.now += FAILURE_WINDOW_S
    assert isinstance(logins.login(KEY, "10.0.0.1"), Login)


def test_a_good_login_forgets_the_failures_before_it() -> None:
    logins = Setup().logins()
    for _ in range(MAX_FAILURES - 1):
        logins.login("wrong", "10.0.0.1")
    opened(logins, "10.0.0.1")
    for _ in range(MAX_FAILURES - 1):
        assert logins.login("wrong", "10.0.0.1") is None
    assert isinstance(logins.login(KEY, "10.0.0.1"), Login)
