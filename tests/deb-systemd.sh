#!/usr/bin/env bash
# The Debian package under a real systemd. Boots a container (systemd-nspawn
# on a copy-on-write overlay of this machine's root, private network) and in
# it, as an operator would:
#
#   1. installs OLD.deb: the service is enabled and started, /healthz
#      answers, the generated admin token appears;
#   2. edits the conffile, buffers events for a webhook whose receiver is
#      down, and sees their execution lines in the real journal;
#   3. upgrades in place to NEW.deb: the service restarts on the new binary,
#      the edited conffile is kept, and once the receiver is up every
#      buffered event is delivered (nothing lost); a downgrade back to
#      OLD.deb then opens the same data;
#   4. removes the package (stopped, data and conffile kept), then purges
#      it (data, token and /etc/herald gone).
#
#   bash tests/deb-systemd.sh OLD.deb NEW.deb
#
# Needs root and systemd-nspawn (installed when missing); elsewhere it is
# skipped with a message, except under CI=true, where a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/packages.sh
source cross/packages.sh

old_deb=$(realpath "$1")
new_deb=$(realpath "$2")
EVENTS=50

skip() {
  if [ "${CI:-}" = true ]; then echo "deb-systemd: FAILED: $*"; exit 1; fi
  echo "deb-systemd: SKIPPED: $*"
  exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root to make a container"
[ -x /lib/systemd/systemd ] || install_packages systemd
[ -x /lib/systemd/systemd ] || skip "no systemd on this machine to boot in a container"
command -v systemd-nspawn >/dev/null 2>&1 || install_packages systemd-container
command -v systemd-nspawn >/dev/null 2>&1 || skip "systemd-nspawn (package systemd-container) is missing"

work=$(mktemp -d /var/tmp/herald-deb.XXXXXX)
root=$work/root
mkdir -p "$work/upper" "$work/overlay-work" "$root" "$work/debs"
cp "$old_deb" "$work/debs/old.deb"
cp "$new_deb" "$work/debs/new.deb"

nspawn_pid=""
leader=""
cleanup() {
  local code=$?
  if [ "$code" != 0 ] && [ -n "$leader" ]; then
    echo "--- journal of herald in the container ---"
    run journalctl -u herald --no-pager -n 80 2>/dev/null || true
    echo "--- console ---"
    tail -n 40 "$work/console.log" || true
  fi
  if [ -n "$nspawn_pid" ]; then
    kill "$nspawn_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$nspawn_pid" 2>/dev/null || true
  fi
  umount "$root" 2>/dev/null || umount -l "$root" 2>/dev/null || true
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT

# Build machines made from container images often forbid service starts
# with a policy-rc.d; the container stands for a gateway, which has none.
if [ -e /usr/sbin/policy-rc.d ]; then
  mkdir -p "$work/upper/usr/sbin" && mknod "$work/upper/usr/sbin/policy-rc.d" c 0 0
fi

# Helpers the container runs: the API with the generated token, and a
# receiver that records the events it gets.
mkdir -p "$work/upper/opt/herald-test"
cat > "$work/upper/opt/herald-test/api.py" <<'EOF'
import sys, urllib.error, urllib.request
method, path = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
token = open("/var/lib/herald/admin.token").read().strip()
req = urllib.request.Request("http://127.0.0.1:8470" + path, data=body, method=method,
                             headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
try:
    print(urllib.request.urlopen(req, timeout=5).read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode(), file=sys.stderr)
    sys.exit(1)
EOF
cat > "$work/upper/opt/herald-test/receiver.py" <<'EOF'
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[1], "a") as f:
            f.write(self.headers["webhook-id"] + "\n")
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", 9999), H).serve_forever()
EOF

# The upper layer is complete before the overlay is mounted (overlayfs
# does not promise to see changes made below it while mounted).
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/overlay-work" "$root"
echo "deb-systemd: booting a container with systemd"
systemd-nspawn -q -D "$root" --boot --register=no --keep-unit --link-journal=no --private-network \
  -M herald-deb --bind-ro="$work/debs:/debs" > "$work/console.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 1 100); do
  leader=$(pgrep -P "$nspawn_pid" -x systemd || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { cat "$work/console.log"; echo "deb-systemd: the container did not start"; exit 1; }
run() { nsenter --target "$leader" --mount --uts --ipc --net --pid --root -- sh -c 'cd / && exec "$@"' sh "$@"; }
api() { run python3 /opt/herald-test/api.py "$@"; }
fail() { echo "deb-systemd: FAILED: $*"; exit 1; }
until_ok() { # seconds, what, command...
  local within=$1 what=$2; shift 2
  for _ in $(seq 1 $((within * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "$what (not within ${within}s)"
}
booted() { run systemctl is-system-running --wait > "$work/state" 2>/dev/null || [ -s "$work/state" ]; }
until_ok 120 "the container's systemd to finish booting" booted
echo "deb-systemd: the container's systemd is $(cat "$work/state")"

# 1. Install.
run env DEBIAN_FRONTEND=noninteractive dpkg -i /debs/old.deb < /dev/null
[ "$(run systemctl is-enabled herald)" = enabled ] || fail "herald is not enabled after the install"
until_ok 20 "herald active after the install" run systemctl is-active --quiet herald
until_ok 20 "/healthz answering" run python3 -c \
  'import urllib.request; assert urllib.request.urlopen("http://127.0.0.1:8470/healthz").read().strip() == b"ok"'
until_ok 10 "the generated admin token" run test -s /var/lib/herald/admin.token
run test -L /var/lib/herald || fail "/var/lib/herald is not the DynamicUser link to /var/lib/private/herald"
[ "$(run stat -c %a /var/lib/private/herald/admin.token)" = 600 ] || fail "admin.token is not mode 0600"
echo "deb-systemd: installed $(run dpkg-query -W -f '${Version}' herald): enabled, active, /healthz ok, admin token generated"

# 2. An operator's edit of the conffile (retries every second), then events
#    buffered for a receiver that is down.
run sed -i 's/^retry_schedule = .*/retry_schedule = ["0s", "1s"]/' /etc/herald/herald.toml
run systemctl restart herald
until_ok 20 "herald back after the restart" api GET /v1/status
wh=$(api POST /v1/webhooks '{"app":"erp","event":"*","url":"http://127.0.0.1:9999/hook"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for i in $(seq 1 $EVENTS); do
  api POST /v1/events "{\"event\":\"door.opened\",\"data\":{\"n\":$i},\"idempotency_key\":\"door-$i\"}" > /dev/null
done
pending() { api GET "/v1/webhooks/$wh" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending"])'; }
[ "$(pending)" = $EVENTS ] || fail "the webhook has $(pending) events pending, not $EVENTS"
failures_in_journal() { run journalctl -u herald HERALD_INTERFACE=erp PRIORITY=3 -o cat --no-pager | grep -q "webhook $wh"; }
until_ok 20 "the failed deliveries as error entries in the journal" failures_in_journal
echo "deb-systemd: $EVENTS events buffered; their failed deliveries are in the journal (HERALD_INTERFACE=erp, PRIORITY=3)"

# 3. Upgrade in place.
pid_before=$(run systemctl show -P MainPID herald)
run env DEBIAN_FRONTEND=noninteractive dpkg -i /debs/new.deb < /dev/null
new_version=$(dpkg-deb -f "$new_deb" Version)
[ "$(run dpkg-query -W -f '${Version}' herald)" = "$new_version" ] || fail "the upgrade did not install $new_version"
until_ok 20 "herald active after the upgrade" run systemctl is-active --quiet herald
pid_after=$(run systemctl show -P MainPID herald)
[ "$pid_after" != "$pid_before" ] || fail "herald was not restarted by the upgrade (MainPID $pid_before)"
run grep -q '^retry_schedule = \["0s", "1s"\]' /etc/herald/herald.toml || fail "the upgrade lost the edit of the conffile"
until_ok 20 "the API after the upgrade" api GET /v1/status
stored=$(api GET '/v1/events?limit=1000' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
[ "$stored" = $EVENTS ] || fail "$stored events after the upgrade, not $EVENTS"
run systemd-run --quiet --unit=receiver python3 /opt/herald-test/receiver.py /opt/herald-test/got
delivered() { [ "$(run sort -u /opt/herald-test/got 2>/dev/null | wc -l)" -ge $EVENTS ]; }
until_ok 60 "all $EVENTS buffered events delivered after the upgrade" delivered
drained() { [ "$(pending)" = 0 ]; }
until_ok 10 "the webhook's queue empty" drained
echo "deb-systemd: upgraded to $new_version (MainPID $pid_before -> $pid_after), conffile edit kept, all $EVENTS events delivered"

# 3b. And back: a downgrade to OLD opens the same data.
old_version=$(dpkg-deb -f "$old_deb" Version)
run env DEBIAN_FRONTEND=noninteractive dpkg -i /debs/old.deb < /dev/null
[ "$(run dpkg-query -W -f '${Version}' herald)" = "$old_version" ] || fail "the downgrade did not install $old_version"
until_ok 20 "the API after the downgrade" api GET /v1/status
stored=$(api GET '/v1/events?limit=1000' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
[ "$stored" = $EVENTS ] || fail "$stored events after the downgrade, not $EVENTS"
echo "deb-systemd: downgraded to $old_version: the same $EVENTS events"

# 4. Remove, then purge.
run env DEBIAN_FRONTEND=noninteractive dpkg -r herald < /dev/null
run systemctl is-active --quiet herald && fail "herald still runs after the remove"
run test -e /usr/bin/herald && fail "/usr/bin/herald is still there after the remove"
run test -s /var/lib/private/herald/herald.redb || fail "the remove deleted the data"
run test -f /etc/herald/herald.toml || fail "the remove deleted the conffile"
run env DEBIAN_FRONTEND=noninteractive dpkg --purge herald < /dev/null
for gone in /etc/herald /var/lib/herald /var/lib/private/herald; do
  run test -e "$gone" && fail "$gone is still there after the purge"
done
run dpkg-query -W herald > /dev/null 2>&1 && fail "dpkg still knows herald after the purge"
echo "deb-systemd: removed (stopped; data and conffile kept), then purged (data, token and /etc/herald gone)"
echo "deb-systemd: OK"
