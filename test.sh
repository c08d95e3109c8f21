#!/usr/bin/env bash
# Run every test: the unit tier under Python 3.8 and 3.13 (side by side), then the rest of the
# whole suite (integration with the official SDKs, load/proxy/browser tests, end-to-end with
# the real CLIs against a fake model API on 127.0.0.1, and any unit test a unit tier skipped)
# under the default python3.
#
# Installs what the tests need by itself, into a cache outside the clone
# (${CLINVK_TEST_CACHE:-~/.cache/clinvk-test}): Python virtualenvs and the pinned CLIs from npm.
# With CI=true the end-to-end tier must run: a failure to install it fails the run.
#
# CLINVK_E2E_VERSIONS=latest ./test.sh runs the end-to-end tier on the newest published release
# of every CLI instead (installed into $CACHE/npm-latest; the pinned ones, CI's default, stay
# as they are). `python3 -m tests.e2e.matrix run --versions latest` also records the results in
# the README's conformance matrix.
set -uo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
CACHE="${CLINVK_TEST_CACHE:-$HOME/.cache/clinvk-test}"
export CLINVK_TEST_CACHE="$CACHE"
mkdir -p "$CACHE"
PYENV_ROOT="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
status=0

log() { printf '\n=== %s\n' "$*"; }

# venv NAME PYTHON REQUIREMENTS -> prints the venv's python
venv() {
    local dir="$CACHE/venv-$1" py="$2" req="$3" stamp
    stamp="$dir/.req-$(sha256sum "$req" | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        rm -rf "$dir"
        "$py" -m venv "$dir" >&2 || return 1
        "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2 || return 1
        touch "$stamp"
    fi
    echo "$dir/bin/python"
}

# pytest with exit code 5 ("no tests collected") turned into a failure.
run_pytest() {
    local py="$1"; shift
    "$py" -m pytest "$@"
    local rc=$?
    if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; return 1; fi
    return "$rc"
}

# Debian packages some tests drive for real: promtool (metrics format), headless Chromium
# and Firefox (the cross-site tests, the web console), nginx (reverse-proxy tests),
# redis-server (the Redis store), zsh and fish (completion scripts load).
log "checking Debian packages: prometheus chromium firefox-esr nginx redis-server zsh fish"
missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v firefox-esr >/dev/null 2>&1 || missing="$missing firefox-esr"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v zsh >/dev/null 2>&1 || missing="$missing zsh"
command -v fish >/dev/null 2>&1 || missing="$missing fish"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } >&2 \
            || { echo "apt-get install$missing failed" >&2; [ "${CI:-}" = "true" ] && status=1; }
    else
        echo "missing Debian packages:$missing (tests that need them will be skipped)" >&2
        [ "${CI:-}" = "true" ] && status=1
    fi
fi

log "building dist/clinvk.pyz"
./build_pyz.sh || status=1

log "installing the pinned real CLIs (npm) for the end-to-end tier"
if command -v npm >/dev/null 2>&1; then
    python3 -m tests.e2e.realclis install || { echo "installing the real CLIs failed" >&2; [ "${CI:-}" = "true" ] && status=1; }
    # The newer CLIs (qwen, copilot, opencode), pinned too, in a prefix of their own.
    python3 -m tests.e2e.realclis install-more || { echo "installing the newer CLIs failed" >&2; [ "${CI:-}" = "true" ] && status=1; }
    if [ "${CLINVK_E2E_VERSIONS:-pinned}" = "latest" ]; then
        log "installing the latest published real CLIs (CLINVK_E2E_VERSIONS=latest)"
        python3 -m tests.e2e.realclis install-latest || { echo "installing the latest CLIs failed" >&2; status=1; }
    fi
    # The official OpenAI JS SDK and the Vercel AI SDK, for the tests of the OpenAI-compatible
    # API under node (tests/test_openai_compat.py, tests/test_vercel_ai_sdk.py).
    if [ ! -d "$CACHE/npm-sdk/node_modules/openai" ] || [ ! -d "$CACHE/npm-sdk/node_modules/ai" ] \
            || [ ! -d "$CACHE/npm-sdk/node_modules/@ai-sdk/openai-compatible" ]; then
        npm install --silent --no-audit --no-fund --prefix "$CACHE/npm-sdk" openai@5 ai@7 @ai-sdk/openai-compatible@3 >&2 \
            || { echo "installing the JS SDKs failed" >&2; [ "${CI:-}" = "true" ] && status=1; }
    fi
    # axe-core, injected by the browser tests of the web console (tests/test_browser_console.py)
    # for the accessibility scan.
    if [ ! -f "$CACHE/npm-axe/node_modules/axe-core/axe.min.js" ]; then
        npm install --silent --no-audit --no-fund --prefix "$CACHE/npm-axe" axe-core@4 >&2 \
            || { echo "installing axe-core failed" >&2; [ "${CI:-}" = "true" ] && status=1; }
    fi
elif [ "${CI:-}" = "true" ]; then
    echo "npm is not installed: the end-to-end tier cannot run, and CI requires it" >&2
    status=1
else
    echo "npm not found: the end-to-end tier will be SKIPPED (install Node.js + npm to run it)" >&2
fi

# Each unit tier writes the tests it skipped to $tiers/skipped-<version>; the whole-suite tier
# then leaves out the unit tests both tiers ran, so each test runs once per tier it belongs to
# (tests/tiers.py). A unit tier that cannot run leaves no file: then nothing is left out.
# The unit tiers run side by side (they wait on subprocesses more than they compute: two cores
# finish both in little more than the time of one). The first shows its output live; the
# others' output follows when they end. CLINVK_TEST_SERIAL=1 runs them one after the other.
tiers=$(mktemp -d)
trap 'rm -rf "$tiers"' EXIT
rest=""
ready=()        # VERSION=VENV_PYTHON of each unit tier that can run
for v in 3.8.18 3.13.0; do
    py="$PYENV_ROOT/versions/$v/bin/python3"
    rest="$rest${rest:+:}$tiers/skipped-$v"
    if [ ! -x "$py" ]; then
        echo "Python $v not found at $py" >&2
        [ "${CI:-}" = "true" ] && status=1
        continue
    fi
    vpy=$(venv "unit-$v" "$py" tests/requirements-unit.txt) || { status=1; continue; }
    ready+=("$v=$vpy")
done
unit_tier() {   # VERSION=VENV_PYTHON
    TEST_TIER_SKIPS_OUT="$tiers/skipped-${1%%=*}" run_pytest "${1#*=}" \
        -q -p no:cacheprovider --ignore=tests/e2e -m "not sdk and not slow" tests
}
if [ "${CLINVK_TEST_SERIAL:-}" = "1" ]; then
    for tier in "${ready[@]}"; do
        log "unit tier under Python ${tier%%=*}"
        unit_tier "$tier" || status=1
    done
elif [ "${#ready[@]}" -gt 0 ]; then
    others=("${ready[@]:1}")
    pids=""
    for tier in "${others[@]}"; do
        # In a process group of its own (set -m), so Ctrl-C reaches it through the trap
        # below: a script's background job would otherwise ignore SIGINT and run on.
        set -m
        { unit_tier "$tier" > "$tiers/out-${tier%%=*}" 2>&1; echo $? > "$tiers/rc-${tier%%=*}"; } &
        set +m
        pids="$pids $!"
    done
    trap 'interrupted=1; for p in $pids; do kill -INT -- "-$p" 2>/dev/null; done' INT TERM
    log "unit tier under Python ${ready[0]%%=*}"
    unit_tier "${ready[0]}" || status=1
    for p in $pids; do
        while kill -0 "$p" 2>/dev/null; do wait "$p"; done
    done
    trap - INT TERM
    for tier in "${others[@]}"; do
        log "unit tier under Python ${tier%%=*} (it ran side by side with the one above)"
        cat "$tiers/out-${tier%%=*}"
        [ "$(cat "$tiers/rc-${tier%%=*}" 2>/dev/null)" = "0" ] || status=1
    done
    [ -z "${interrupted:-}" ] || { log "interrupted"; exit 130; }
fi

log "whole suite under $(python3 --version): what the unit tiers did not run (sdk, slow, end-to-end, their skips)"
dpy=$(venv dev python3 tests/requirements-dev.txt) || { echo "installing dev requirements failed" >&2; exit 1; }
TEST_TIER_REST="$rest" run_pytest "$dpy" -q -p no:cacheprovider -rs tests "$@" || status=1

if [ "$status" -ne 0 ]; then log "FAILED"; else log "all tiers passed"; fi
exit "$status"
