"""Responses the proxy itself produces: JSON in OpenAI's error shape, a distinct status each."""

from __future__ import annotations

import json

from aiohttp import web


def error_response(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "proxy_error", "code": code}}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
    )
