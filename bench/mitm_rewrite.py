"""mitmproxy addon for the benchmark: the proxy's default rewrite rules, bodies streamed.

Run: mitmdump --mode reverse:http://127.0.0.1:PORT/ -s bench/mitm_rewrite.py
Both streams are switched on in the header hooks: left buffered, mitmproxy holds a whole
SSE stream until it ends. The path is changed there too, as a streamed request's
headers go upstream right after `requestheaders`.
"""

from __future__ import annotations

import re

from mitmproxy import http

# Prefix rules on a "/" boundary, as in the proxy's default table; the query is kept.
RETIRED = re.compile(r"^/backend-api/(?:v1/|codex/v1/|v1/codex/)?responses(?=[/?]|$)")
CANONICAL = "/backend-api/codex/responses"


class Rewrite:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.request.stream = True
        flow.request.path = RETIRED.sub(CANONICAL, flow.request.path, count=1)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        flow.response.stream = True


addons = [Rewrite()]
