#!/usr/bin/env bash
# The whole test suite, on a fresh machine as on a used one: formatting and lints, then the
# unit and integration tests on SQLite and on PostgreSQL (a throwaway server started here),
# python-gitlab and the real gitlab-runner included. Caches (cargo target, Python virtualenv,
# Go modules and the runner binary) live outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${RUNWAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runway}
mkdir -p "$CACHE"
# One target folder per clone: test binaries carry their clone's path (fixtures are read
# from it), and cargo takes a binary built from another clone's identical sources as fresh.
clone_key=$(pwd -P | sha256sum | cut -c1-12)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target-$clone_key}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# python-gitlab from PyPI, pinned, in a virtualenv of our own.
venv="$CACHE/pyvenv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
export RUNWAY_TEST_PYTHON="$venv/bin/python"

# Debian's Chromium, for the Swagger UI test in a real browser.
if [ -z "${RUNWAY_TEST_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  echo "installing Chromium from Debian's packages…" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq chromium >&2
fi

# Playwright (playwright-core, pinned in tests/browser/package.json) for the web pages
# browser test; it drives the Chromium above, so no browser download.
if [ -z "${RUNWAY_TEST_PLAYWRIGHT_DIR:-}" ]; then
  RUNWAY_TEST_PLAYWRIGHT_DIR="$CACHE/playwright"
  # The stamp is written only after a complete install, so a failed one is retried.
  if ! cmp -s tests/browser/package.json "$RUNWAY_TEST_PLAYWRIGHT_DIR/installed.json"; then
    mkdir -p "$RUNWAY_TEST_PLAYWRIGHT_DIR"
    cp tests/browser/package.json "$RUNWAY_TEST_PLAYWRIGHT_DIR/package.json"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$RUNWAY_TEST_PLAYWRIGHT_DIR" \
      --no-audit --no-fund --no-package-lock --silent >&2
    cp tests/browser/package.json "$RUNWAY_TEST_PLAYWRIGHT_DIR/installed.json"
  fi
  export RUNWAY_TEST_PLAYWRIGHT_DIR
fi

# The real GitLab Runner, built from the Go module proxy (cached by pin).
if [ -z "${RUNWAY_TEST_GITLAB_RUNNER:-}" ]; then
  RUNWAY_TEST_GITLAB_RUNNER=$(RUNWAY_CACHE_DIR="$CACHE" scripts/build-gitlab-runner.sh)
  export RUNWAY_TEST_GITLAB_RUNNER
fi

# PostgreSQL: a server of our own on a free loopback port, unless one is given.
if [ -z "${RUNWAY_TEST_DATABASE_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/runway-pg.XXXXXX)
  trap 'scripts/pg.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
  RUNWAY_TEST_DATABASE_URL=$(RUNWAY_PG_DIR="$pg_dir" scripts/pg.sh)
  export RUNWAY_TEST_DATABASE_URL
fi

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
