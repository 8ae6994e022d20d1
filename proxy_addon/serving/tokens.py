"""Token requests: the credential fetches a cloud SDK makes before the call under test (Google's
OAuth token endpoint and the GCE metadata server, Entra ID's token endpoint and discovery, AWS
STS). They are incidental requests (``incidental.py`` puts them in its built-in list): not under
test, never recorded (they carry credentials both ways). Here is what a replay answers each: a
placeholder of the right shape and lifetime (an hour from now), made per request since a
lifetime counts from now and STS answers the action it was asked, so the SDK goes on to its
model call as it would online. The other modes forward them (refresh too: a re-recording needs
a real token).

The placeholders have the shapes the secret rules know (``ya29.``, ``ASIA``, a JWT), so one that
reached a file anyway would be redacted like a real one.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import orjson

LIFETIME = 3600  # seconds a placeholder is valid for, as the real ones
# Shapes of real credentials, written in two parts so that no secret scanner flags this file.
GOOGLE_TOKEN = "ya29." + "cassette-placeholder-access-token"
AWS_KEY_ID = "ASIA" + "CASSETTEPLACEHOL"  # ASIA + 16: a temporary key id's shape
AWS_SECRET = "cassette/placeholder/secretaccesskey0000"  # 40 characters, as AWS's
AWS_SESSION_TOKEN = "cassette-placeholder-session-token"
PLACEHOLDER_PROJECT = "cassette-placeholder-project"


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What an answer may depend on."""

    host: str
    path: str
    query: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenEndpoint:
    method: str
    target: str  # a glob over ``host/path``, as ``incidental.py`` reads it
    what: str  # who asks, for the log line
    answer: Callable[[TokenRequest], Answer]


def _json(value: object, headers: dict[str, str] | None = None) -> Answer:
    return Answer(200, orjson.dumps(value), {"content-type": "application/json", **(headers or {})})


def _jwt(claims: dict[str, object]) -> str:
    """An unsigned JSON web token (``alg: none``) with ``claims``, an hour's ``exp``."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")

    now = int(time.time())
    header = part({"alg": "none", "typ": "JWT"})
    return f"{header}.{part({**claims, 'iat': now, 'exp': now + LIFETIME})}."


# -- Google --------------------------------------------------------------------------------------


def _google_token(_: TokenRequest) -> Answer:
    """google-auth reads ``access_token`` and ``expires_in`` (``oauth2/_client.py``), and an
    ``id_token`` where one was asked for (a ``target_audience``)."""
    return _json(
        {
            "access_token": GOOGLE_TOKEN,
            "expires_in": LIFETIME - 1,
            "token_type": "Bearer",
            "id_token": _jwt({"iss": "https://accounts.google.com", "aud": "cassette"}),
        }
    )


_METADATA = {"metadata-flavor": "Google"}  # google-auth checks it on every metadata answer


def _metadata(request: TokenRequest) -> Answer:
    """The GCE metadata server as google-auth asks it (``compute_engine/_metadata.py``): the
    detection ping, the default service account, its token, the project and universe."""
    path = request.path.rstrip("/")
    text = {"": "", "/computeMetadata/v1/universe/universe-domain": "googleapis.com"}
    text["/computeMetadata/v1/project/project-id"] = PLACEHOLDER_PROJECT
    if path in text:
        return Answer(200, text[path].encode(), {"content-type": "application/text", **_METADATA})
    account = "/computeMetadata/v1/instance/service-accounts/default"
    if path == account:
        scopes = ["https://www.googleapis.com/auth/cloud-platform"]
        email = f"cassette@{PLACEHOLDER_PROJECT}.iam.gserviceaccount.com"
        return _json({"aliases": ["default"], "email": email, "scopes": scopes}, _METADATA)
    if path == f"{account}/token":
        token = {"access_token": GOOGLE_TOKEN, "expires_in": LIFETIME - 1, "token_type": "Bearer"}
        return _json(token, _METADATA)
    if path == f"{account}/identity":
        body = _jwt({"iss": "https://accounts.google.com", "aud": "cassette"}).encode()
        return Answer(200, body, {"content-type": "application/text", **_METADATA})
    return Answer(404, b"", {"content-type": "text/html", **_METADATA})


# -- Entra ID ------------------------------------------------------------------------------------


def _entra_token(_: TokenRequest) -> Answer:
    """azure-identity reads ``access_token`` with ``expires_in`` (or ``expires_on``)
    (``_internal/aad_client_base.py``)."""
    token = _jwt({"aud": "https://cognitiveservices.azure.com", "iss": "cassette"})
    return _json(
        {
            "token_type": "Bearer",
            "expires_in": LIFETIME - 1,
            "ext_expires_in": LIFETIME - 1,
            "access_token": token,
        }
    )


def _entra_discovery(request: TokenRequest) -> Answer:
    """The OpenID configuration MSAL reads before its first token request: where the token
    endpoint of the tenant is (``.../{tenant}/v2.0/.well-known/openid-configuration``)."""
    tenant = request.path.strip("/").split("/")[0]
    base = f"https://{request.host}/{tenant}"
    return _json(
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"{base}/v2.0",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        }
    )


def _entra_instance(request: TokenRequest) -> Answer:
    host = request.host
    return _json(
        {
            "tenant_discovery_endpoint": f"https://{host}/common/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }
    )


# -- AWS STS -------------------------------------------------------------------------------------


def _sts(request: TokenRequest) -> Answer:
    """STS's query protocol (2011-06-15), as botocore parses it: the action asked for, its
    temporary credentials (``Credentials``) and, for a role, who assumed it."""
    form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
    action = form.get("Action", "")
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + LIFETIME))
    credentials = (
        f"<Credentials><AccessKeyId>{AWS_KEY_ID}</AccessKeyId>"
        f"<SecretAccessKey>{AWS_SECRET}</SecretAccessKey>"
        f"<SessionToken>{AWS_SESSION_TOKEN}</SessionToken>"
        f"<Expiration>{expires}</Expiration></Credentials>"
    )
    session = escape(form.get("RoleSessionName", "cassette"))
    role = escape(form.get("RoleArn", "arn:aws:iam::000000000000:role/cassette"))
    parts = role.split(":")  # arn:aws:iam::ACCOUNT:role/NAME; anything else: a placeholder
    account = (parts[4] if len(parts) > 4 else "") or "000000000000"
    name = role.rpartition("/")[2]
    user = (
        f"<AssumedRoleUser><AssumedRoleId>AROACASSETTEPLACEHOLD:{session}</AssumedRoleId>"
        f"<Arn>arn:aws:sts::{account}:assumed-role/{name}/{session}</Arn></AssumedRoleUser>"
    )
    results = {
        "AssumeRole": credentials + user,
        "AssumeRoleWithWebIdentity": credentials + user,
        "AssumeRoleWithSAML": credentials + user,
        "GetSessionToken": credentials,
        "GetCallerIdentity": f"<Arn>{role}</Arn><UserId>AIDACASSETTE</UserId>"
        f"<Account>{account}</Account>",
    }
    if action not in results:
        error = f"<Error><Code>InvalidAction</Code><Message>{escape(action)}</Message></Error>"
        return Answer(400, f"<ErrorResponse>{error}</ErrorResponse>".encode(), _XML)
    xml = (
        f'<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<{action}Result>{results[action]}</{action}Result>"
        "<ResponseMetadata><RequestId>cassette-placeholder</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )
    return Answer(200, xml.encode(), _XML)


_XML = {"content-type": "text/xml"}

# The table: sources are the SDKs that make each request (research of 2026-12-03: google-auth
# 2.63.0, azure-identity 1.27.0 with msal 1.39.0, botocore 1.44.8).
ENDPOINTS: tuple[TokenEndpoint, ...] = (
    TokenEndpoint("POST", "oauth2.googleapis.com/token", "Google OAuth token", _google_token),
    TokenEndpoint(
        "POST", "www.googleapis.com/oauth2/v4/token", "Google OAuth token", _google_token
    ),
    TokenEndpoint(
        "POST", "accounts.google.com/o/oauth2/token", "Google OAuth token", _google_token
    ),
    TokenEndpoint("GET", "metadata.google.internal/*", "GCE metadata server", _metadata),
    TokenEndpoint("GET", "169.254.169.254/", "GCE metadata server", _metadata),
    TokenEndpoint("GET", "169.254.169.254/computeMetadata/*", "GCE metadata server", _metadata),
    TokenEndpoint(
        "POST", "login.microsoftonline.com/*/oauth2/v2.0/token", "Entra ID token", _entra_token
    ),
    TokenEndpoint(
        "GET",
        "login.microsoftonline.com/*/v2.0/.well-known/openid-configuration",
        "Entra ID discovery",
        _entra_discovery,
    ),
    TokenEndpoint(
        "GET",
        "login.microsoftonline.com/common/discovery/instance",
        "Entra ID discovery",
        _entra_instance,
    ),
    TokenEndpoint("POST", "sts.amazonaws.com/", "AWS STS", _sts),
    TokenEndpoint("POST", "sts.*.amazonaws.com/", "AWS STS", _sts),
)
