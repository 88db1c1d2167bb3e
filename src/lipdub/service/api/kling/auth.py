"""Who is calling Kling's API: a JWT signed with a pair's secret key, checked as Kling
checks it, or a lipdub API key sent as the plain bearer (Kling accepts its API keys so).

A JWT (HS256) names its access key in ``iss``; the signature is checked first, then
``exp`` (required) and ``nbf`` with ``LIPDUB_KLING_JWT_LEEWAY_S`` of leeway for clocks
that disagree. Kling's codes: 1001 no header, 1002 unreadable token, 1000 unknown key or
wrong signature, 1003 not yet valid, 1004 expired (all HTTP 401).
"""

from __future__ import annotations

import logging
from typing import Annotated

import jwt
from fastapi import Depends, Request

from lipdub.service.api.deps import Services, Svc
from lipdub.service.api.kling.codes import (
    AUTH_EMPTY,
    AUTH_EXPIRED,
    AUTH_FAILED,
    AUTH_INVALID,
    AUTH_NOT_YET_VALID,
    KlingError,
)
from lipdub.service.store.kling import derive_secret, secret_check

log = logging.getLogger("lipdub.api")


def _unauthorized(code: int, message: str) -> KlingError:
    return KlingError(401, code, message)


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: a JWT. lipdub's API keys (``ld_...``) have no dot."""
    return token.count(".") == 2


async def kling_account(svc: Svc, request: Request) -> str:
    header = request.headers.get("authorization", "").strip()
    if not header:
        raise _unauthorized(
            AUTH_EMPTY,
            "Authorization is empty: send 'Authorization: Bearer <JWT made from your access "
            "key and secret key>'.",
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized(
            AUTH_INVALID, "Authorization is invalid: it must be 'Bearer <token>'."
        )
    if looks_like_jwt(token):
        account = await _jwt_account(svc, token)
    else:
        found: str | None = await svc.read(svc.ctx.store.account_for_key, token)
        if found is None:
            raise _unauthorized(
                AUTH_FAILED,
                "Authentication failed: the API key is unknown or revoked; check it, or "
                "sign a JWT with your access key and secret key.",
            )
        account = found
    await svc.admission.request(account)
    return account


async def _jwt_account(svc: Services, token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _unauthorized(
            AUTH_INVALID, "Authorization is invalid: the token is not a readable JWT."
        ) from None
    if header.get("alg") != "HS256":
        raise _unauthorized(
            AUTH_INVALID,
            f"Authorization is invalid: the JWT is signed with {header.get('alg')!r}; sign "
            "it with HS256 and your secret key.",
        )
    access_key = claims.get("iss")
    if not isinstance(access_key, str) or not access_key:
        raise _unauthorized(
            AUTH_INVALID, "Authorization is invalid: the JWT has no 'iss' (your access key)."
        )
    row = await svc.read(svc.ctx.store.kling_key, access_key[:64])
    if row is None:
        raise _unauthorized(
            AUTH_FAILED,
            "Authentication failed: the access key in 'iss' is unknown or revoked.",
        )
    settings = svc.ctx.settings
    secret = derive_secret(settings.secret_key(), row["access_key"])
    if secret_check(secret) != row["secret_check"]:
        # Not the client's doing: the pair was issued under another signing key.
        log.warning(
            "kling access key %s…: issued under another signing key (LIPDUB_SIGNING_KEY "
            "changed?); issue a new pair with 'lipdub keys kling'",
            row["access_key"][:8],
        )
        raise _unauthorized(
            AUTH_FAILED,
            "Authentication failed: this access key is no longer valid on this server; ask "
            "the operator for a new access key and secret key.",
        )
    try:
        jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            leeway=settings.kling_jwt_leeway_s,
            options={"require": ["exp", "iss"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized(
            AUTH_EXPIRED,
            "Authorization has expired (exp is past): sign a new JWT (Kling's examples "
            "make one valid for 30 minutes).",
        ) from None
    except jwt.ImmatureSignatureError:
        raise _unauthorized(
            AUTH_NOT_YET_VALID,
            "Authorization is not yet valid (nbf is in the future): check your clock, or "
            "set nbf a few seconds in the past.",
        ) from None
    except jwt.InvalidSignatureError:
        raise _unauthorized(
            AUTH_FAILED,
            "Authentication failed: the JWT's signature does not match the secret key of "
            "its access key.",
        ) from None
    except jwt.MissingRequiredClaimError as e:
        raise _unauthorized(
            AUTH_INVALID, f"Authorization is invalid: the JWT has no {e.claim!r} claim."
        ) from None
    except jwt.PyJWTError as e:
        raise _unauthorized(AUTH_INVALID, f"Authorization is invalid: {e}.") from None
    return str(row["account"])


KlingAccount = Annotated[str, Depends(kling_account)]
