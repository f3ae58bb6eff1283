"""The environment the clients inherit: OPENAI_BASE_URL (the OpenAI SDKs read it; Codex
0.169 ignores it) and the proxy variables that could carry a client's requests for this
proxy somewhere else, or that the proxy itself could use to reach the upstream."""

from __future__ import annotations

import json

from proxy.config import proxy_from_environ
from proxy.doctor.baseurl import Places, Route, classify
from proxy.doctor.findings import Finding, Status, shown
from proxy.doctor.inputs import Inputs
from proxy.settings import UpstreamSection

AREA = "Environment"


def bases(inputs: Inputs) -> list[str]:
    return [inputs.openai_base_url] if inputs.openai_base_url else []


def check(inputs: Inputs, places: Places, upstream: UpstreamSection) -> list[Finding]:
    return [
        _openai_base_url(inputs.openai_base_url, places),
        _client_proxy(inputs, places),
        *_upstream_proxy(inputs, upstream),
    ]


def _openai_base_url(value: str | None, places: Places) -> Finding:
    where = "OPENAI_BASE_URL"
    if not value:
        return Finding(area=AREA, status=Status.OK, where=where, says="not set")
    says = f"= {shown(value)}: {(route := classify(value, places))}"
    if route in (Route.PROXY, Route.LIVE):
        return Finding(area=AREA, status=Status.OK, where=where, says=says)
    if route is Route.ELSEWHERE:
        says += ", not this proxy; not checked"
        return Finding(area=AREA, status=Status.INFO, where=where, says=says)
    if route is Route.RETIRED:
        says += "; the OpenAI SDKs post to its /responses, which answers 403"
    fix = f"export OPENAI_BASE_URL={places.proxy_base} where your shell sets it"
    return Finding(area=AREA, status=Status.PROBLEM, where=where, says=says, fix=fix)


def _client_proxy(inputs: Inputs, places: Places) -> Finding:
    """Would a client that honours HTTP_PROXY send its requests for this proxy there?"""
    origin = places.proxy_base.removesuffix("/backend-api")
    found = proxy_from_environ(origin, inputs.proxy_environ)
    if found is None:
        says = f"the clients reach {origin} directly"
        if any(name.lower() == "http_proxy" for name in inputs.proxy_environ):
            says += " (NO_PROXY covers it)"
        return Finding(area=AREA, status=Status.OK, where="HTTP_PROXY, NO_PROXY", says=says)
    name, proxy = found
    host = origin.split("://", 1)[1].rsplit(":", 1)[0]
    says = (
        f"= {json.dumps(shown(proxy))}: clients that honour it send their requests "
        f"for {origin} to that proxy, which cannot reach this machine's loopback"
    )
    fix = f"add {host},localhost to NO_PROXY (and no_proxy) where your shell sets them"
    return Finding(area=AREA, status=Status.PROBLEM, where=name, says=says, fix=fix)


def _upstream_proxy(inputs: Inputs, upstream: UpstreamSection) -> list[Finding]:
    """HTTPS_PROXY set while the proxy itself goes out directly: worth knowing if the way
    out fails below."""
    found = proxy_from_environ(upstream.url, inputs.proxy_environ)
    if found is None or upstream.proxy or upstream.proxy_from_env:
        return []
    # Said as a sentence: the variable holds the URL, upstream.proxy_from_env a boolean.
    says = (
        f"= {json.dumps(shown(found[1]))} is set, and upstream.proxy_from_env is false, so "
        f"this proxy goes to {upstream.url} directly: if only that proxy can reach it, set "
        "upstream.proxy_from_env = true"
    )
    return [Finding(area=AREA, status=Status.INFO, where=found[0], says=says)]
