#!/usr/bin/env bash
# Makes sure what drawdown runs against is present: Debian's nats-server and
# clickhouse-server binaries (and prometheus, whose package also ships
# promtool, for the metrics tests), and the npm dependencies. Safe to run every
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
  command -v "$1" >/dev/null 2>&1 && return 0
  for dir in /usr/local/sbin /usr/sbin /sbin; do
    [[ -x "$dir/$1" ]] && return 0
  done
  return 1
}

missing=()
for package in nats-server clickhouse-server prometheus; do
  # Each Debian package is named after the binary it provides.
  have_binary "$package" || missing+=("$package")
done

# Prometheus is only for test/prometheus.test.ts and (its promtool) for
# test/process-output.test.ts; drawdown runs without it: a user who cannot
# install it is told how, and carries on.
if [[ "$(id -u)" -ne 0 && " ${missing[*]} " == *" prometheus "* ]]; then
  echo "install.sh: prometheus is missing (only test/prometheus.test.ts and test/process-output.test.ts need it); install as root with: sudo apt-get install -y prometheus" >&2
  missing=("${missing[@]/prometheus/}")
  read -r -a missing <<<"${missing[*]}"
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
  for package in "${missing[@]}"; do
    if ! have_binary "$package"; then
      echo "install.sh: apt-get installed $package but no $package binary was found on PATH or in /usr/sbin" >&2
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
  # Not `npm ci`: chdb lists optional per-platform packages (darwin, arm64)
  # that the registry we can reach does not serve, so the lock file cannot
  # name them and `npm ci` refuses it as out of sync. `npm install` follows
  # the lock file for everything it does name, and leaves it unchanged.
  say "npm install"
  run_quietly npm install --no-audit --no-fund
fi
