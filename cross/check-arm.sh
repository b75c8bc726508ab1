#!/usr/bin/env bash
# Builds herald for the ARM gateways as cross/README.md describes, checks that
# each binary is static and how big it is, and runs it under qemu-user far
# enough to answer /healthz and to stop cleanly on SIGTERM.
#
#   bash cross/check-arm.sh            aarch64 (static musl) and armv7 (static glibc)
#   bash cross/check-arm.sh aarch64    only one of them
#
# Installs its Debian packages and Rust targets when missing (needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=("${@:-aarch64 armv7}")
read -r -a targets <<< "${targets[*]}"
# The budget for aarch64 is under 6 MiB (the project's stated budget; it was
# held under 5 MiB until issue 20); armv7 has no stated budget, so the same
# guard there only catches bloat.

# shellcheck source=cross/packages.sh
source cross/packages.sh

smoke() { # binary, qemu
  local bin=$1 qemu=$2 dir port log pid code
  dir=$(mktemp -d)
  log=$dir/log
  printf '[server]\nlisten = "127.0.0.1:0"\n[storage]\ndir = "%s/data"\n' "$dir" > "$dir/herald.toml"
  # A release build must not let one stray variable freeze business time.
  HERALD_TEST_CLOCK=2001-01-01T00:00:00Z "$qemu" "$bin" serve --config "$dir/herald.toml" 2> "$log" &
  pid=$!
  for _ in $(seq 1 300); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then cat "$log"; kill "$pid" 2>/dev/null; echo "check-arm: $bin did not start"; return 1; fi
  local answer=""
  for _ in $(seq 1 100); do
    answer=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=2).read().decode().strip())" 2>/dev/null || true)
    [ "$answer" = ok ] && break
    sleep 0.1
  done
  kill -TERM "$pid"
  code=0; wait "$pid" || code=$?
  if [ "$answer" != ok ] || [ "$code" != 0 ]; then
    cat "$log"; echo "check-arm: $bin answered '${answer}' to /healthz and exited $code"; return 1
  fi
  if ! grep -q "HERALD_TEST_CLOCK is ignored" "$log"; then
    cat "$log"; echo "check-arm: $bin honours HERALD_TEST_CLOCK; a release build must ignore it"; return 1
  fi
  echo "check-arm: $bin under $qemu answered /healthz, ignored HERALD_TEST_CLOCK and exited 0 on SIGTERM"
  rm -rf "$dir"
}

check() { # target, qemu, readelf, size limit in MiB
  local target=$1 qemu=$2 readelf=$3 max_size=$(($4 * 1024 * 1024)) bin size
  rustup target add "$target" >/dev/null
  cargo build --release --locked --config cross/cargo-config.toml --target "$target"
  bin=target/$target/release/herald
  if "$readelf" -l "$bin" | grep -q INTERP; then echo "check-arm: $bin is not static"; return 1; fi
  size=$(stat -c %s "$bin")
  echo "check-arm: $target: static, $size bytes ($((size / 1024)) KiB)"
  if [ "$size" -gt "$max_size" ]; then echo "check-arm: $bin is over $4 MiB"; return 1; fi
  smoke "$bin" "$qemu"
}

for t in "${targets[@]}"; do
  case $t in
    aarch64)
      install_packages gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user-static python3
      check aarch64-unknown-linux-musl qemu-aarch64-static aarch64-linux-gnu-readelf 6 ;;
    armv7)
      install_packages gcc-arm-linux-gnueabihf libc6-dev-armhf-cross binutils-arm-linux-gnueabihf qemu-user-static python3
      check armv7-unknown-linux-gnueabihf qemu-arm-static arm-linux-gnueabihf-readelf 6 ;;
    *) echo "check-arm: unknown target $t (use aarch64 or armv7)"; exit 2 ;;
  esac
done
