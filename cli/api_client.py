"""A small synchronous client of the public REST API, for the CLI.

Every failure becomes one `ApiError` whose message says what to do: the API cannot be
reached (start it, or point at yours), it did not answer in time, it answered with the one
error body (its `message`, plus the status), or what answered is not a smoltbot API.

The agent's credential, when a call needs it, travels only in the `x-api-key` header of
that call; it is never part of a message, a log line or an exception.
"""

from __future__ import annotations

import logging
from typing import Any, Self

import httpx

from smoltbot.cli.api_contract import ENDPOINTS, ERROR_SCHEMA, read
from smoltbot.cli.config_store import Config, cli_settings, normalize_value
from smoltbot.cli.errors import ApiError, ConfigError

__all__ = [
    "ApiClient",
    "default_api_url",
    "default_gateway_url",
    "gateway_reachable",
    "resolve_api_url",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
_HOW_TO_START = (
    "start the local stack with `smoltbot up`, or point at yours with --api URL (or SMOLTBOT_API_URL)"
)


def _local_url(port: int, variable: str) -> str:
    if port == 0:  # "any free port" to a service; no address to call
        raise ConfigError(f"{variable} must be a port number (1-65535) to call, got 0")
    return f"http://127.0.0.1:{port}"


def default_api_url() -> str:
    """The local stack's API (`smoltbot up`): SMOLTBOT_API_PORT, as the API itself reads it."""
    return _local_url(cli_settings().api_port, "SMOLTBOT_API_PORT")


def default_gateway_url() -> str:
    """The local stack's gateway: SMOLTBOT_GATEWAY_PORT, as the gateway itself reads it."""
    return _local_url(cli_settings().gateway_port, "SMOLTBOT_GATEWAY_PORT")


def resolve_api_url(option: str | None, config: Config) -> str:
    """--api, else SMOLTBOT_API_URL, else the config, else the local stack's."""
    chosen = option or cli_settings().api_url
    if chosen:
        return normalize_value("api_url", chosen)
    return config.api_url or default_api_url()


def gateway_reachable(gateway_url: str, timeout: float = 2.0) -> bool:
    """Whether the gateway answers its health check."""
    try:
        return httpx.get(f"{gateway_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class ApiClient:
    """`with ApiClient(url) as api: api.call("agent", agent_id=...)`."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers={"accept": "application/json", "user-agent": "smoltbot-cli"})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, endpoint: str, *, params: dict[str, Any] | None = None, json: Any = None,
             credential: str | None = None, bearer: bool = False, **path_params: str) -> Any:
        """Calls one of `api_contract.ENDPOINTS` and returns its JSON body. The credential goes in
        `x-api-key`, or as `Authorization: Bearer` with `bearer` (an OAuth token, which the
        upstream accepts only there)."""
        spec = ENDPOINTS[endpoint]
        unknown = set(params or {}) - set(spec.query)
        if unknown:
            raise KeyError(f"{endpoint} does not list query parameters {sorted(unknown)} in api_contract")
        path = spec.path.format(**path_params)
        query = {key: value for key, value in (params or {}).items() if value is not None}
        if credential and not credential.isprintable():
            raise ApiError(
                "the credential in your environment contains characters an HTTP header cannot carry "
                "(a newline or control character); set it again without them"
            )
        headers = None
        if credential:
            headers = {"authorization": f"Bearer {credential}"} if bearer else {"x-api-key": credential}
        try:
            response = self._http.request(spec.method, path, params=query or None, json=json, headers=headers)
        except httpx.TimeoutException:
            raise ApiError(f"the smoltbot API at {self.base_url} did not answer within {self.timeout:g}s; "
                           f"check that it is running ({_HOW_TO_START})") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
            raise ApiError(f"cannot reach the smoltbot API at {self.base_url} ({_why(error)}); "
                           f"{_HOW_TO_START}") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise ApiError(f"{self.base_url} is not a usable API URL; pass --api http://HOST:PORT") from None
        except httpx.HTTPError as error:
            raise ApiError(f"calling the smoltbot API at {self.base_url} failed: {_why(error)}") from None
        return self._body(response)

    def _body(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            if body is None:
                raise ApiError(f"{self.base_url} answered HTTP {response.status_code} without JSON; "
                               f"is it a smoltbot API? (pass --api URL)")
            return body
        # The API's error shape always carries an integer `code`; other JSON errors (e.g. the
        # gateway's Anthropic-shaped ones, when --api points at the gateway) are not ours.
        if not isinstance(body, dict) or not isinstance(body.get("error"), dict) \
                or not isinstance(body["error"].get("code"), int):
            raise ApiError(f"{self.base_url} answered HTTP {response.status_code} "
                           f"{response.reason_phrase or ''}".rstrip()
                           + "; is it a smoltbot API? (pass --api URL)")
        message = read(body, ERROR_SCHEMA, "error.message") or response.reason_phrase
        reason = read(body, ERROR_SCHEMA, "error.reason")
        field = read(body, ERROR_SCHEMA, "error.field")
        status = read(body, ERROR_SCHEMA, "error.code") or response.status_code
        logger.debug("API error %s %s on %s", status, reason, response.request.url.path)
        if status in (503, 504):
            message = f"{message} (the API at {self.base_url} is up, a service behind it is not)"
        raise ApiError(f"{message} (HTTP {status})", status=status, reason=reason, field=field)


def _why(error: Exception) -> str:
    text = str(error).strip()
    # httpx's connect errors read like "[Errno 111] Connection refused"; that is the useful part.
    return text.split("] ", 1)[-1] if text else type(error).__name__
