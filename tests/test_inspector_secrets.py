"""The inspector never shows, searches or hands out a secret (issue 26, item 2).

An exchange's secrets are its credential headers' values and its query's credential
parameters (`access_token`, `api_key`, as the log masks them); each is masked by value
wherever it turns up in what the inspector builds: the curl command (a shell variable),
a JSON tree (as a string, a key or a number), and search, which runs over what the page
shows and so never matches a masked value.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from typing import Any

import aiohttp

from proxy.inspector.curl import command
from proxy.redact import marker, secret_values
from tests.fake_upstream import FakeUpstream
from tests.harness import StartProxy, recorder
from tests.test_inspector import ACCOUNT, CLIENT_HEADERS, LEGACY, TOKEN
from tests.test_inspector_content import REQUEST, content_of

ACCESS_TOKEN = "qs-access-token-4e1d9a"
API_KEY = "qs-api-key-77c0b2"
NUMERIC_ACCOUNT = "204856731900"
QUERY = f"?access_token={ACCESS_TOKEN}&api_key={API_KEY}&stream=1"


async def search(client: aiohttp.ClientSession, url: Any) -> list[int]:
    async with client.get(url) as response:
        assert response.status == 200
        found: list[int] = (await response.json())["matches"]
        return found


async def test_copy_as_curl_puts_query_credentials_in_variables_and_still_runs(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed: apt-get install -y curl"
    inspected = await start_proxy(inspector={"enabled": True})
    async with client.post(
        inspected.make_url(LEGACY + QUERY), headers=CLIENT_HEADERS, json=REQUEST
    ) as response:
        await response.read()
    await recorder(inspected).wait_ended()
    command = (await content_of(client, inspected))["curl"]
    for secret in (ACCESS_TOKEN, API_KEY, TOKEN, ACCOUNT):
        assert secret not in command
    assert f"{LEGACY}?access_token=$ACCESS_TOKEN&api_key=$API_KEY&stream=1" in command
    variables = {"TOKEN": TOKEN, "ACCOUNT_ID": ACCOUNT, "ACCESS_TOKEN": ACCESS_TOKEN}
    shell = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        env={"PATH": os.environ["PATH"], "API_KEY": API_KEY, **variables},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(shell.communicate(), 30)
    assert shell.returncode == 0, err.decode()
    first, again = fake.received
    assert again.target == first.target == "/backend-api/codex/responses" + QUERY
    assert again.body == first.body


async def test_secrets_echoed_in_json_are_masked_as_values_keys_and_numbers_and_never_found(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    """The account id as a string, inside a string, as a member's name and as a number (a
    numeric account id), and the query's access token echoed in the body."""
    inspected = await start_proxy(inspector={"enabled": True})
    body = {
        "account": ACCOUNT,
        "note": f"for {ACCOUNT} only",
        "by_account": {ACCOUNT: 1, NUMERIC_ACCOUNT: 2},
        "numeric": int(NUMERIC_ACCOUNT),
        "echo": ACCESS_TOKEN,
        "visible": "plain-marker-31f",
    }
    headers = {**CLIENT_HEADERS, "x-account-number": NUMERIC_ACCOUNT}
    async with client.post(
        inspected.make_url("/backend-api/files" + QUERY), headers=headers, json=body
    ) as response:
        assert response.status == 200
        await response.read()
    await recorder(inspected).wait_ended()
    content = await content_of(client, inspected)
    tree = content["request"]["json"]
    assert tree["account"] == marker(ACCOUNT)
    assert tree["note"] == f"for {marker(ACCOUNT)} only"
    assert tree["by_account"] == {marker(ACCOUNT): 1, marker(NUMERIC_ACCOUNT): 2}
    assert tree["numeric"] == marker(NUMERIC_ACCOUNT)
    assert tree["echo"] == marker(ACCESS_TOKEN)
    shown = json.dumps(content)
    for secret in (ACCOUNT, NUMERIC_ACCOUNT, ACCESS_TOKEN, API_KEY, TOKEN):
        assert secret not in shown
        url = inspected.make_url("/_proxy/search").with_query(q=secret)
        assert await search(client, url) == [], secret
    url = inspected.make_url("/_proxy/search").with_query(q="plain-marker-31f")
    assert await search(client, url) == [1]


def test_a_query_credential_named_like_a_header_s_variable_gets_its_own() -> None:
    headers = [
        ("Authorization", f"Bearer {TOKEN}"),
        ("ChatGPT-Account-Id", ACCOUNT),
        ("x-client-request-id", f"id-{ACCOUNT}"),
    ]
    target = f"/backend-api/models?token={ACCESS_TOKEN}&note=for-{ACCOUNT}"
    shown = command(
        method="GET",
        url="http://127.0.0.1:8780" + target,
        headers=headers,
        body=None,
        encoding=None,
        secrets=secret_values(headers, target),
    )
    assert shown == (
        'curl -sS -N -X GET "http://127.0.0.1:8780/backend-api/models'
        f'?token=$TOKEN_QUERY&note=for-{marker(ACCOUNT)}" \\\n'
        '  -H "Authorization: Bearer $TOKEN" \\\n'
        '  -H "ChatGPT-Account-Id: $ACCOUNT_ID" \\\n'
        '  -H "x-client-request-id: $X_CLIENT_REQUEST_ID"'
    )
