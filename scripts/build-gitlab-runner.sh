#!/usr/bin/env bash
# Builds the real GitLab Runner from the Go module proxy, pinned by pseudo-version, and caches
# the binary so that later runs rebuild only when the pin changes. Prints the binary's path.
#
# The pin is the newest version of gitlab.com/gitlab-org/gitlab-runner that the Go module
# proxy reachable here serves *and* whose dependencies it serves too (checked 2026-11-28):
#
# - v19.3.0 (commit 9cbf0074ddb0) and every other release tag from v14.0.0 to v19.3.0: the
#   proxy answers "This module version is not available" (403) for their pseudo-versions, as
#   for every commit of the main branch from June 2020 to August 2026 that we tried.
# - v1.11.1-0.20260903214710-fc1f1862bd91 (main, VERSION 19.4.0) is served, but its
#   dependencies labkit/v2, step-runner, moa, fleeting/* and phrasestream are refused, and
#   the nested module helpers/runner_wrapper/api is not served at all: it cannot be built.
# - v1.11.1-0.20200110014830-8e5683f82927 (main of January 2020, VERSION 12.8.0) is served
#   with all its dependencies and builds with today's Go: that is the pin.
#
# RUNWAY_RUNNER_PIN / RUNWAY_RUNNER_VERSION choose another version (with an ordinary go.mod:
# newer runners need their nested module put back, see docs/compatibility.md).
set -euo pipefail

MODULE=gitlab.com/gitlab-org/gitlab-runner
PIN=${RUNWAY_RUNNER_PIN:-v1.11.1-0.20200110014830-8e5683f82927}
RUNNER_VERSION=${RUNWAY_RUNNER_VERSION:-12.8.0~pre.8e5683f8}
COMMIT=${PIN##*-}

CACHE=${RUNWAY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runway}
OUT="$CACHE/gitlab-runner/$PIN/gitlab-runner"
if [ -x "$OUT" ]; then
  echo "$OUT"
  exit 0
fi

export GOFLAGS=-modcacherw
export GOPATH=${GOPATH:-$CACHE/go}
export GOMODCACHE=${GOMODCACHE:-$GOPATH/pkg/mod}
export GOCACHE=${GOCACHE:-$CACHE/go-build}
export GOTOOLCHAIN=local

main_dir=$(go mod download -json "$MODULE@$PIN" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
if [ -z "$main_dir" ]; then
  echo "the Go module proxy did not serve $MODULE@$PIN" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$main_dir" "$work/src"
chmod -R u+w "$work/src"
# The module zip keeps vendor/modules.txt but none of the vendored code: build in module
# mode, with the dependencies the go.mod pins, from the proxy.
rm -rf "$work/src/vendor"

mkdir -p "$(dirname "$OUT")"
(
  cd "$work/src"
  CGO_ENABLED=0 go build -mod=mod -trimpath \
    -ldflags "-X $MODULE/common.NAME=gitlab-runner -X $MODULE/common.VERSION=$RUNNER_VERSION -X $MODULE/common.REVISION=${COMMIT:0:8} -X $MODULE/common.BRANCH=main -w" \
    -o "$OUT.tmp" .
) >&2
mv "$OUT.tmp" "$OUT"
echo "$OUT"
