#!/usr/bin/env bash
# Builds herald's Debian packages from the static binaries, with cargo-deb
# (its settings are [package.metadata.deb] in Cargo.toml), and checks each
# with lintian:
#
#   bash cross/deb.sh                 amd64, arm64 and armhf
#   bash cross/deb.sh amd64           only some of them
#   HERALD_DEB_VERSION=0.1.0-2 bash cross/deb.sh amd64   another version
#
# The packages land in target/debian/herald_VERSION_ARCH.deb (or in
# $HERALD_DEB_OUT). cargo-deb deletes other versions of the package it
# finds there and in target/debian: copy one elsewhere to keep it.
# Installs the Debian packages, Rust targets and cargo-deb it needs when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/packages.sh
source cross/packages.sh

CARGO_DEB_VERSION=3.8.0
arches=("${@:-amd64 arm64 armhf}")
read -r -a arches <<< "${arches[*]}"

if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
install_packages lintian

out=${HERALD_DEB_OUT:-target/debian}
version_args=()
if [ -n "${HERALD_DEB_VERSION:-}" ]; then version_args=(--deb-version "$HERALD_DEB_VERSION"); fi

for arch in "${arches[@]}"; do
  case $arch in
    amd64) target=x86_64-unknown-linux-musl; install_packages gcc ;;
    arm64) target=aarch64-unknown-linux-musl; install_packages gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu ;;
    armhf) target=armv7-unknown-linux-gnueabihf; install_packages gcc-arm-linux-gnueabihf libc6-dev-armhf-cross binutils-arm-linux-gnueabihf ;;
    *) echo "deb: unknown architecture $arch (use amd64, arm64 or armhf)"; exit 2 ;;
  esac
  rustup target add "$target" >/dev/null
  cargo build --release --locked --config cross/cargo-config.toml --target "$target"
  # The binary is stripped by the release profile already.
  deb=$(cargo deb --no-build --no-strip --target "$target" --output "$out/" "${version_args[@]}" | tail -n1)
  echo "deb: $deb ($(stat -c %s "$deb") bytes)"
  # Errors fail the build; warnings are shown (see README.md for the known ones).
  lintian --fail-on error "$deb"
done
