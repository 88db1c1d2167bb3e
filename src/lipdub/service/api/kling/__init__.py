"""Kling's own API, served by lipdub (``/v1/...``, docs/kling.md): the endpoints, envelope,
codes and JWT authentication of Kling's official API, over the same accounts, balances,
prices, queue, storage, limits and callbacks as the reseller contract (``/api/v1``).

``codes`` (envelope, error codes), ``auth`` (JWT or API key -> account), ``schemas``
(request bodies), ``identify`` (synchronous identify-face), ``lipsync`` (create, query,
list). The routes are left out of the OpenAPI document: that document is the reseller
contract's, and Kling documents its own API.
"""

from fastapi import APIRouter

from lipdub.service.api.kling import identify, lipsync

router = APIRouter()
router.include_router(identify.router)
router.include_router(lipsync.router)

__all__ = ["router"]
