"""The HTTP side of `vkp`: one httpx client carrying the caller's credential, and every way a
request can fail turned into one line for stderr (`CliError`) with its exit code."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1/arq"
TIMEOUT_SECONDS = 30.0
# A status stream sends a keep-alive comment every 15 s: three missed ones mean it is gone.
STREAM_READ_TIMEOUT_SECONDS = 45.0

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job failed or was aborted
EXIT_USAGE = 2  # a bad command line, or arguments the API refused (422)
EXIT_REQUEST = 3  # the request failed: network, credential, not found, conflict, limits, outage
EXIT_INTERRUPTED = 130


def job_path(action: str, job_id: str, suffix: str = "") -> str:
    """`/api/v1/arq/<action>/<job id><suffix>`, the id escaped as one path segment."""
    return f"{API}/{action}/{quote(job_id, safe=':')}{suffix}"


class CliError(Exception):
    """What to say on one line of stderr, and the exit code that goes with it."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int = EXIT_REQUEST,
        status: int | None = None,
        retry_after: float | None = None,
        errors: Sequence[dict[str, Any]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status  # the HTTP status, None when no answer came
        self.retry_after = retry_after
        self.errors = list(errors)  # a 422's field errors: {"loc", "msg", "type"}
        # How the command line names a field (its option), given the field's path.
        self.label: Callable[[list[str]], str] | None = None

    def field_lines(self) -> list[str]:
        """One line per field error, each naming its field (through `label`, given the field's
        path without the request part it came in: body, query, kwargs)."""
        label, lines = self.label, []
        for error in self.errors:
            path = [str(part) for part in error.get("loc") or []]
            while path and path[0] in ("body", "query", "path", "kwargs"):
                path.pop(0)
            name = label(path) if label else ".".join(path)
            lines.append(f"{name or 'arguments'}: {error.get('msg', 'invalid')}")
        return lines

    @property
    def transient(self) -> bool:
        """Worth another try after a pause: no answer, a limit, or an outage."""
        return self.status in (None, 429, 502, 503, 504)


@dataclass(frozen=True)
class Connection:
    """Where the API is and who is calling: flags beat the environment; with both a key and a
    token, the key is sent (as the API would pick it anyway)."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def resolve(
        cls,
        *,
        url: str | None,
        api_key: str | None,
        token: str | None,
        environ: Mapping[str, str] = os.environ,
    ) -> Connection:
        """From the flags, falling back on VKP_URL, VKP_API_KEY and VKP_TOKEN."""
        if api_key is None and token is None:
            api_key = environ.get("VKP_API_KEY") or None
            token = None if api_key else environ.get("VKP_TOKEN") or None
        base = (url or environ.get("VKP_URL") or DEFAULT_URL).strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(
                f"invalid API URL {_shown(base)!r}: expected http(s)://host[:port] "
                "(VKP_URL or --url)",
                exit_code=EXIT_USAGE,
            )
        for name, value in (("API key (VKP_API_KEY)", api_key), ("token (VKP_TOKEN)", token)):
            if value is not None and not (value.isascii() and value.isprintable()):
                raise CliError(
                    f"the {name} has characters an HTTP header cannot carry", exit_code=EXIT_USAGE
                )
        return cls(url=base, api_key=api_key, token=token)

    @property
    def headers(self) -> dict[str, str]:
        if self.api_key:
            return {"X-API-Key": self.api_key}
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    @property
    def shown_url(self) -> str:
        """The URL without any user:password it may carry."""
        return _shown(self.url)


def _shown(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Api:
    """The HTTP API of one deployment. Every method returns the decoded JSON answer or raises
    `CliError`."""

    def __init__(self, connection: Connection, *, transport: httpx.BaseTransport | None = None):
        self.connection = connection
        self._http = httpx.Client(
            base_url=connection.url,
            headers={"User-Agent": "vkp", **connection.headers},
            timeout=TIMEOUT_SECONDS,
            transport=transport,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=json, params=params)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        query = {key: value for key, value in (params or {}).items() if value is not None}
        with self._transport_errors():
            response = self._http.request(method, path, json=json, params=query)
        if response.status_code >= 400:
            raise self.error(response)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{self.connection.shown_url} answered {method} {path} with something that is "
                "not JSON: is VKP_URL the API?"
            ) from None

    @contextlib.contextmanager
    def stream(self, path: str, *, last_event_id: str | None = None) -> Iterator[httpx.Response]:
        """An open `text/event-stream` response (its status not checked: the caller decides)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(TIMEOUT_SECONDS, read=STREAM_READ_TIMEOUT_SECONDS)
        with (
            self._transport_errors(),
            self._http.stream("GET", path, headers=headers, timeout=timeout) as response,
        ):
            yield response

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        url = self.connection.shown_url
        try:
            yield
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot connect to {url} ({_reason(exc)}): is the API running? "
                "(set VKP_URL or --url)"
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"{url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise CliError(f"the request to {url} failed: {_reason(exc)}") from None

    def error(self, response: httpx.Response) -> CliError:
        """The one line (and exit code) that says why the API refused a request."""
        code = response.status_code
        body = _json_or_none(response)
        detail = body.get("detail") if isinstance(body, dict) else None
        if not isinstance(detail, str) or not detail:
            detail = _phrase(code).lower()
        retry_after = _retry_after(response)
        prefix = f"{code} {_phrase(code)}"
        if code == 401:
            if not self.connection.headers:
                hint = "no credential given: set VKP_API_KEY (or VKP_TOKEN), or use --api-key"
                return CliError(f"{prefix}: {hint}", status=code)
            which = "VKP_API_KEY / --api-key" if self.connection.api_key else "VKP_TOKEN / --token"
            return CliError(f"{prefix}: {detail} (check {which})", status=code)
        if code == 422:
            errors = body.get("errors") if isinstance(body, dict) else None
            # With field errors, the lines below say what the detail would repeat.
            return CliError(
                f"{prefix}: invalid arguments" if errors else f"{prefix}: {detail}",
                exit_code=EXIT_USAGE,
                status=code,
                errors=[err for err in errors or [] if isinstance(err, dict)],
            )
        message = f"{prefix}: {detail}"
        if retry_after is not None:
            message += f" (try again in {retry_after:g} s)"
        return CliError(message, status=code, retry_after=retry_after)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def _reason(exc: Exception) -> str:
    # httpx wraps the socket's error; its text ("[Errno 111] Connection refused") is the news.
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text
