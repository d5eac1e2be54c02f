#!/usr/bin/env bash
# scripts/deps.sh: make sure this Debian 12 machine has what building, testing and
# running mod_wsgi-rs needs, and install whatever is missing.
#
# - Checks each Debian package with dpkg-query. When some are missing:
#     as root: `apt-get update` once, then `apt-get install -y --no-install-recommends <missing>`;
#     otherwise: prints the exact apt-get command to run and exits 1.
# - Checks that `cargo` (the Rust toolchain) is on PATH; it is not installed from here.
# - Idempotent, and prints a single line when everything is already present.
#
# It never uninstalls, reconfigures or starts anything. (Installing the apache2 package may
# make Debian start its own apache2 service on port 80; that is left alone: nothing in this
# repository uses port 80 or Debian's service.)
set -euo pipefail

# Package -> why it is needed.
PACKAGES=(
    apache2                 # httpd 2.4 itself: /usr/sbin/apache2 and its modules
    apache2-dev             # apxs and the httpd headers (build.rs, bindgen)
    libapr1-dev             # APR headers (normally pulled in by apache2-dev)
    python3.11              # Debian's /usr/bin/python3.11, the interpreter we embed
    python3.11-dev          # Python headers and libpython3.11 (PyO3 links against it)
    python3.11-venv         # `python3.11 -m venv` for the example app's virtualenv
    libclang-dev            # libclang for bindgen
    gcc                     # C compiler for build.rs (cc crate) and linking
    libc6-dev               # C library headers
    binutils                # nm and ldd checks of the built module (tests/config.rs)
    curl                    # health checks in the scripts
)

# With --bench: what the side-by-side benchmarks need as well. (Debian enables the C module in
# its own Apache configuration when it installs it; our servers use their own configuration.)
if [[ "${1:-}" == "--bench" ]]; then
    PACKAGES+=(
        libapache2-mod-wsgi-py3 # the C mod_wsgi, measured side by side
        wrk                     # HTTP load generator
    )
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} > 0)); then
    install_cmd="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps: missing Debian packages: ${missing[*]}" >&2
        echo "deps: run as root:  apt-get update && $install_cmd" >&2
        exit 1
    fi
    echo "deps: installing missing Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        echo "deps: cargo is in $HOME/.cargo/bin but not on PATH; run: export PATH=\"\$HOME/.cargo/bin:\$PATH\"" >&2
    else
        echo "deps: cargo (the Rust toolchain, 1.93 or newer) is not installed; install it with rustup (https://rustup.rs) and re-run" >&2
    fi
    exit 1
fi

for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$( [[ $component == fmt ]] && echo rustfmt || echo clippy )"
        else
            echo "deps: cargo $component is missing (rustup component add ...)" >&2
            exit 1
        fi
    fi
done

if ((${#missing[@]} > 0)); then
    echo "deps: all build and run dependencies are now installed"
else
    echo "deps: all build and run dependencies are present"
fi
