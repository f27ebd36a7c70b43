#!/usr/bin/env bash
# Makes sure what drawdown runs against is present: Debian's nats-server and
# clickhouse-server binaries (and prometheus, whose package also ships
# promtool, kubectl, for the metrics and manifest tests, and zookeeper, which
# the replicated ClickHouse cluster test coordinates through), and the npm
# dependencies. Safe to run every
# time: when everything is there it only looks, and prints nothing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { echo "install.sh: $*"; }

# Runs a command with its output hidden, showing the output only if it fails,
# so a successful run stays one line per action.
run_quietly() {
  local output status
  output="$(mktemp)"
  if "$@" >"$output" 2>&1; then
    rm -f "$output"
    return 0
  else
    status=$?
    cat "$output" >&2
    rm -f "$output"
    echo "install.sh: failed ($status): $*" >&2
    exit "$status"
  fi
}

# Debian installs both servers to /usr/sbin, which is not on a normal user's
# PATH; the TypeScript wrappers look there too.
have_binary() {
  local dir
  # Debian's zookeeper ships no command on PATH: its server script lives here.
  if [[ "$1" == zookeeper ]]; then
    [[ -x /usr/share/zookeeper/bin/zkServer.sh ]]
    return
  fi
  command -v "$1" >/dev/null 2>&1 && return 0
  for dir in /usr/local/sbin /usr/sbin /sbin; do
    [[ -x "$dir/$1" ]] && return 0
  done
  return 1
}

# The Debian package that provides a binary: each is named after its binary,
# except kubectl (kubernetes-client, whose kubectl has `kubectl kustomize`).
package_of() {
  case "$1" in
    kubectl) echo kubernetes-client ;;
    *) echo "$1" ;;
  esac
}

missing=()
missing_binaries=()
for binary in nats-server clickhouse-server prometheus kubectl zookeeper; do
  if ! have_binary "$binary"; then
    missing+=("$(package_of "$binary")")
    missing_binaries+=("$binary")
  fi
done

# Only tests need these (drawdown runs without them): a user who cannot
# install them is told how, and carries on.
declare -A test_only=(
  [prometheus]="test/prometheus.test.ts and, for promtool, test/process-output.test.ts"
  [kubernetes-client]="test/deploy.test.ts (kubectl kustomize deploy/k8s)"
  [zookeeper]="test/clickhouse-cluster.test.ts (a replicated ClickHouse cluster coordinates through it)"
)
if [[ "$(id -u)" -ne 0 ]]; then
  kept=()
  for package in "${missing[@]}"; do
    if [[ -n "${test_only[$package]:-}" ]]; then
      echo "install.sh: $package is missing (only ${test_only[$package]} needs it); install as root with: sudo apt-get install -y $package" >&2
    else
      kept+=("$package")
    fi
  done
  missing=("${kept[@]}")
fi

if ((${#missing[@]} > 0)); then
  if [[ "$(id -u)" -ne 0 ]]; then
    {
      echo "install.sh: missing ${missing[*]}. Install as root with:"
      echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
    } >&2
    exit 1
  fi
  say "apt-get update"
  run_quietly apt-get update
  # Only what is missing: naming an installed package would upgrade it.
  say "apt-get install ${missing[*]}"
  run_quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  for binary in "${missing_binaries[@]}"; do
    if ! have_binary "$binary"; then
      echo "install.sh: apt-get installed $(package_of "$binary") but no $binary binary was found on PATH or in /usr/sbin" >&2
      exit 1
    fi
  done
fi
# Debian's prometheus package ships promtool beside it (/usr/bin/promtool).
if have_binary prometheus && ! have_binary promtool; then
  echo "install.sh: prometheus is installed but promtool is not (test/process-output.test.ts needs it); reinstall Debian's prometheus package" >&2
fi

if [[ "${DRAWDOWN_SKIP_NPM:-}" != "1" && ! -d "$repo_root/node_modules" ]]; then
  cd "$repo_root"
  # `npm install` follows the lock file and leaves it unchanged. (`npm ci`
  # works too: the lock names chdb's per-platform packages, including the
  # darwin and arm64 ones the registry reachable here does not serve.)
  say "npm install"
  run_quietly npm install --no-audit --no-fund
fi
