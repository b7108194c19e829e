#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
# Installs what the interop tests need (Debian's skopeo, docker-registry, podman, gpg,
# systemd-analyze for the unit file, chromium and chromedriver for the status page, and
# Garage from crates.io for the shared-store tests)
# when it is missing, checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v gpg >/dev/null 2>&1 || missing+=(gnupg)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Fail loudly, here, if a tool is still missing rather than deep inside a test.
command -v skopeo >/dev/null || { echo "skopeo is required (apt-get install skopeo)" >&2; exit 1; }
[ -x /usr/bin/docker-registry ] || { echo "docker-registry is required (apt-get install docker-registry)" >&2; exit 1; }
command -v podman >/dev/null || { echo "podman is required (apt-get install podman)" >&2; exit 1; }
command -v gpg >/dev/null || { echo "gpg is required (apt-get install gnupg)" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is required (apt-get install systemd)" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium is required (apt-get install chromium)" >&2; exit 1; }
command -v chromedriver >/dev/null || { echo "chromedriver is required (apt-get install chromium-driver)" >&2; exit 1; }

# Garage, the S3-compatible object store the shared-store tests run against (crates.io;
# built once into ~/.cargo/bin: about 23 minutes on 2 cores the first time).
if ! command -v garage >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
    echo "tests/run.sh: building Garage 2.5.0 with cargo install (once; it stays in ~/.cargo/bin)" >&2
    cargo install garage --version 2.5.0 --locked --no-default-features --features bundled-libs,sqlite
fi
[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ] || command -v garage >/dev/null || { echo "garage is required (cargo install garage)" >&2; exit 1; }

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
