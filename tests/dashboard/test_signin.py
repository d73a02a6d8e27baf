"""Signing in to the dashboard: keys and JWTs, the session cookie, CSRF, sign-out, settings."""

from __future__ import annotations

import time

import jwt
import pytest

from src.auth.config import AuthSettings
from src.config import ConfigError, Environment, Settings, load
from src.dashboard.config import DashboardSettings
from src.main import create_app
from tests.conftest import API_KEYS, JWT_SECRET, client_for, headers
from tests.dashboard.conftest import Clients
from tests.dashboard.helpers import (
    DASHBOARD,
    SECRET,
    csrf_of,
    post,
    set_cookie_header,
    sign_in,
    signed_in,
)


async def test_a_good_key_signs_in_with_a_safe_cookie(browsers: Clients) -> None:
    async with browsers() as browser:
        response = await sign_in(browser, API_KEYS["alice"])
        assert response.status_code == 303
        assert response.headers["location"] == f"{DASHBOARD}/"
        cookie = set_cookie_header(response)
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags
        assert "samesite=strict" in flags
        assert "path=/dashboard" in flags
        assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
        assert "max-age=3600" in flags
        assert API_KEYS["alice"] not in cookie  # the key itself never travels in the cookie
        overview = await browser.get(f"{DASHBOARD}/")
        assert overview.status_code == 200
        assert "alice (user)" in overview.text


async def test_the_cookie_is_secure_over_https(browsers: Clients) -> None:
    async with browsers("https://test") as browser:
        response = await sign_in(browser, API_KEYS["alice"])
        assert response.status_code == 303
        assert "secure" in [part.strip().lower() for part in set_cookie_header(response).split(";")]


async def test_a_forwarded_proto_from_an_untrusted_client_does_not_count(
    browsers: Clients,
) -> None:
    # The app trusts X-Forwarded-Proto only as uvicorn does (FORWARDED_ALLOW_IPS): not here.
    async with browsers() as browser:
        form = await browser.get(f"{DASHBOARD}/signin")
        response = await browser.post(
            f"{DASHBOARD}/signin",
            data={"csrf_token": csrf_of(form.text), "credential": API_KEYS["alice"]},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert response.status_code == 303
        assert "secure" not in set_cookie_header(response).lower().split("; ")


async def test_a_bad_key_shows_an_error_and_no_session(browsers: Clients) -> None:
    async with browsers() as browser:
        response = await sign_in(browser, "not-a-key-of-anyone")
        assert response.status_code == 401
        assert "That API key or token was not accepted." in response.text
        assert "not-a-key-of-anyone" not in response.text
        page = await browser.get(f"{DASHBOARD}/jobs")
        assert page.status_code == 303
        assert page.headers["location"] == f"{DASHBOARD}/signin?next=%2Fdashboard%2Fjobs"


async def test_a_jwt_signs_in_until_its_exp_at_the_latest(browsers: Clients) -> None:
    token = jwt.encode(
        {"sub": "carol", "role": "admin", "exp": int(time.time()) + 600},
        JWT_SECRET,
        algorithm="HS256",
    )
    async with browsers() as browser:
        response = await sign_in(browser, token)
        assert response.status_code == 303
        max_age = next(
            int(part.split("=")[1])
            for part in set_cookie_header(response).split("; ")
            if part.lower().startswith("max-age=")
        )
        assert 0 < max_age <= 600
        overview = await browser.get(f"{DASHBOARD}/")
        assert "carol (admin)" in overview.text
    forged = jwt.encode(
        {"sub": "carol", "role": "admin", "exp": int(time.time()) + 600},
        "another-secret-that-is-long-enough-000000",
        algorithm="HS256",
    )
    async with browsers() as browser:
        assert (await sign_in(browser, forged)).status_code == 401


async def test_sign_in_goes_back_to_the_page_asked_for_and_nowhere_else(
    browsers: Clients,
) -> None:
    async with browsers() as browser:
        for target, expected in (
            ("/dashboard/jobs", "/dashboard/jobs"),
            ("https://evil.example/", "/dashboard/"),
            ("//evil.example/dashboard", "/dashboard/"),
            ("/dashboard/../api/v1/arq/jobs", "/dashboard/"),
        ):
            form = await browser.get(f"{DASHBOARD}/signin")
            response = await browser.post(
                f"{DASHBOARD}/signin",
                data={
                    "csrf_token": csrf_of(form.text),
                    "credential": API_KEYS["alice"],
                    "next": target,
                },
            )
            assert response.headers["location"] == expected, target
            browser.cookies.clear()


async def test_a_sign_in_without_the_forms_token_is_refused(browsers: Clients) -> None:
    async with browsers() as browser:
        await browser.get(f"{DASHBOARD}/signin")
        response = await post(browser, "/signin", None, credential=API_KEYS["alice"])
        assert response.status_code == 403
        assert (await browser.get(f"{DASHBOARD}/")).status_code == 303


async def test_posts_without_or_with_a_wrong_csrf_token_are_refused(
    browsers: Clients,
) -> None:
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        for token in (None, "", "x" * 43, csrf[:-1] + ("A" if csrf[-1] != "A" else "B")):
            response = await post(browser, "/signout", token)
            assert response.status_code == 403, token
            assert "Content-Security-Policy" in response.headers
        # Still signed in: nothing happened.
        assert (await browser.get(f"{DASHBOARD}/")).status_code == 200
        # Another session's token is no better.
        async with browsers() as other:
            other_csrf = await signed_in(other, "alice")
        assert (await post(browser, "/signout", other_csrf)).status_code == 403
        # A post from another site is refused even with the right token.
        cross = await browser.post(
            f"{DASHBOARD}/signout",
            data={"csrf_token": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
        assert (await post(browser, "/signout", csrf)).status_code == 303


async def test_sign_out_ends_the_session_even_for_a_replayed_cookie(browsers: Clients) -> None:
    async with browsers() as browser:
        csrf = await signed_in(browser, "alice")
        stolen = dict(browser.cookies.items())
        response = await post(browser, "/signout", csrf)
        assert response.status_code == 303
        assert response.headers["location"] == f"{DASHBOARD}/signin"
        assert "max-age=0" in set_cookie_header(response).lower()
        assert (await browser.get(f"{DASHBOARD}/")).status_code == 303
    async with browsers() as thief:
        thief.cookies.update(stolen)
        page = await thief.get(f"{DASHBOARD}/")
        assert page.status_code == 303
        assert page.headers["location"].startswith(f"{DASHBOARD}/signin")


async def test_a_forged_or_tampered_cookie_is_no_session(browsers: Clients) -> None:
    async with browsers() as browser:
        await signed_in(browser, "alice")
        [(name, value)] = list(browser.cookies.items())
        for forged in (value[:-2] + "xx", "eyJvIjoicm9vdCJ9." + value.split(".", 1)[1], "junk"):
            browser.cookies.clear()
            browser.cookies.set(name, forged, path="/dashboard")
            assert (await browser.get(f"{DASHBOARD}/")).status_code == 303, forged


async def test_a_session_ends_when_its_key_is_no_longer_configured(settings: Settings) -> None:
    dashboard = DashboardSettings(_env_file=None, secret=SECRET)  # type: ignore[arg-type]
    async with client_for(settings, dashboard_settings=dashboard) as first:
        await signed_in(first, "root")
        cookies = dict(first.cookies.items())
    # The same secret, but root's key is now a user's: the admin session is over.
    demoted = AuthSettings(_env_file=None, api_keys=f"root:user:{API_KEYS['root']}")
    async with client_for(settings, dashboard_settings=dashboard, auth_settings=demoted) as after:
        after.cookies.update(cookies)
        assert (await after.get(f"{DASHBOARD}/")).status_code == 303
        after.cookies.clear()
        await signed_in(after, "root")
        assert "root (user)" in (await after.get(f"{DASHBOARD}/")).text


# -- settings ---------------------------------------------------------------------------------


def test_a_weak_secret_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_SECRET", "short-secret")
    with pytest.raises(ConfigError) as caught:
        load(DashboardSettings)
    assert "DASHBOARD_SECRET" in str(caught.value)
    assert "short-secret" not in str(caught.value)


async def test_production_without_a_secret_serves_no_dashboard(settings: Settings) -> None:
    production = settings.model_copy(update={"environment": Environment.PRODUCTION})
    off = DashboardSettings(_env_file=None)
    async with client_for(production, dashboard_settings=off) as http:
        assert (await http.get(f"{DASHBOARD}/signin")).status_code == 401  # the API's guard
        assert (await http.get("/api/v1/arq/jobs", headers=headers("alice"))).status_code == 200
    on = DashboardSettings(_env_file=None, secret=SECRET)  # type: ignore[arg-type]
    async with client_for(production, dashboard_settings=on) as http:
        assert (await http.get(f"{DASHBOARD}/signin")).status_code == 200


async def test_development_without_a_secret_signs_with_a_random_one(settings: Settings) -> None:
    dashboard = DashboardSettings(_env_file=None)
    async with client_for(settings, dashboard_settings=dashboard) as http:
        await signed_in(http, "alice")
        cookies = dict(http.cookies.items())
    async with client_for(settings, dashboard_settings=dashboard) as restarted:
        restarted.cookies.update(cookies)
        assert (await restarted.get(f"{DASHBOARD}/")).status_code == 303


async def test_a_disabled_dashboard_is_not_there(settings: Settings) -> None:
    off = DashboardSettings(_env_file=None, enabled=False, secret=SECRET)  # type: ignore[arg-type]
    async with client_for(settings, dashboard_settings=off) as http:
        assert (await http.get(f"{DASHBOARD}/signin")).status_code == 401


def test_the_app_builds_with_the_dashboard_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, auth_settings: AuthSettings
) -> None:
    monkeypatch.setenv("DASHBOARD_SESSION_SECONDS", "10")  # below the floor of 60
    with pytest.raises(ConfigError) as caught:
        create_app(settings=settings, auth_settings=auth_settings)
    assert "DASHBOARD_SESSION_SECONDS" in str(caught.value)
