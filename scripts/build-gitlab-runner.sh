#!/usr/bin/env bash
# Builds the real GitLab Runner from the Go module proxy, pinned by pseudo-version, and caches
# the binary so that later runs rebuild only when the pin changes. Prints the binary's path.
#
# Why not `go install`: the runner's go.mod has `replace` (and `exclude`) directives, which
# `go install module@version` refuses; and the module zip leaves out the nested module
# helpers/runner_wrapper/api that the `replace` points at. So both modules are downloaded at
# the same commit and the nested one is put back where the `replace` expects it.
#
# Pin: the proxy refuses the commit of tag v19.3.0 ("This module version is not available");
# the newest version it serves is the main-branch commit below (VERSION file: 19.4.0).
set -euo pipefail

MODULE=gitlab.com/gitlab-org/gitlab-runner
PIN=${RUNWAY_RUNNER_PIN:-v1.11.1-0.20260903214710-fc1f1862bd91}
RUNNER_VERSION=${RUNWAY_RUNNER_VERSION:-19.4.0~pre.fc1f1862}
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

module_dir() {
  go mod download -json "$1@$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

main_dir=$(module_dir "$MODULE" "$PIN")
api_dir=$(module_dir "$MODULE/helpers/runner_wrapper/api" "$COMMIT" || true)
if [ -z "$main_dir" ]; then
  echo "the Go module proxy did not serve $MODULE@$PIN" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$main_dir" "$work/src"
chmod -R u+w "$work/src"
if [ -n "$api_dir" ]; then
  cp -r "$api_dir" "$work/src/helpers/runner_wrapper/api"
  chmod -R u+w "$work/src/helpers/runner_wrapper/api"
else
  # The proxy serves no version of the nested module (its version list is 404 and every
  # version asked for is refused). Only the `gitlab-runner wrapper` subcommand (a gRPC
  # process supervisor) imports it, and no test of ours uses that subcommand. So the build
  # leaves that one command out: an empty module stands where the `replace` points, and
  # main.go's reference to the command is answered by a command that says it is missing.
  echo "note: $MODULE/helpers/runner_wrapper/api is not served; building without 'gitlab-runner wrapper'" >&2
  mkdir -p "$work/src/helpers/runner_wrapper/api"
  printf 'module %s\n\ngo 1.24\n' "$MODULE/helpers/runner_wrapper/api" > "$work/src/helpers/runner_wrapper/api/go.mod"
  rm -f "$work/src/commands/wrapper.go"
  cat > "$work/src/commands/runway_no_wrapper.go" <<'GO'
package commands

import (
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli"
)

// NewRunnerWrapperCommand stands in for the wrapper command, left out of this build.
func NewRunnerWrapperCommand() cli.Command {
	return cli.Command{
		Name:  "wrapper",
		Usage: "not available in this build (its module is not served by the Go module proxy)",
		Action: func(*cli.Context) {
			logrus.Fatalln("the wrapper command is not available in this build")
		},
	}
}
GO
fi

mkdir -p "$(dirname "$OUT")"
(
  cd "$work/src"
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-X $MODULE/common.NAME=gitlab-runner -X $MODULE/common.VERSION=$RUNNER_VERSION -X $MODULE/common.REVISION=${COMMIT:0:8} -X $MODULE/common.BRANCH=main -w" \
    -o "$OUT.tmp" .
) >&2
mv "$OUT.tmp" "$OUT"
echo "$OUT"
