#!/bin/bash
# The API against its reference: schemathesis (PyPI) runs every operation of
# the served /openapi.json with all its checks against a real daemon, with
# the credentials of each role (admin, integration, technician) and without.
# Daemon and tool run in a network namespace of their own with only loopback
# (as root, as CI runs), so that nothing the fuzzer makes (a webhook to a
# random host) leaves the machine.
#
#   bash .ci/schemathesis.sh target/release/herald
set -euo pipefail

binary=$(realpath "${1:-target/release/herald}")
if ! command -v ip >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi
if ! unshare --net true 2>/dev/null; then
    echo "schemathesis.sh: needs root (a network namespace with only loopback, so nothing the fuzzer makes leaves the machine)" >&2
    exit 1
fi
venv=${SCHEMATHESIS_VENV:-/tmp/herald-schemathesis-venv}
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==4.*" "openapi-spec-validator==0.*"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
token=schemathesis-admin-token-0123456789abcdef
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
cat > "$work/herald.toml" <<EOF
[server]
listen = "127.0.0.1:18470"
# The fuzzer sends wrong credentials on purpose, many a minute.
wrong_credentials = 1000000

[storage]
dir = "$work/data"

[[interfaces]]
name = "crm"
kind = "action"
url = "http://127.0.0.1:9/crm"

[[interfaces]]
name = "shop"
kind = "pull"
url = "http://127.0.0.1:9/shop"

[[schedules]]
name = "shop-sales"
interface = "shop"
every = "1d"

[[accounts]]
name = "ops"
email = "ops@example.com"
role = "admin"
token_sha256 = "$(sha "$token")"

[[accounts]]
name = "erp"
email = "erp@example.com"
role = "integration"
token_sha256 = "$(sha "$token-erp")"

[[accounts]]
name = "tech"
email = "tech@example.com"
role = "technician"
token_sha256 = "$(sha "$token-tech")"
EOF

unshare --net bash -s "$binary" "$work" "$venv" "$token" <<'INNER'
set -euo pipefail
binary=$1 work=$2 venv=$3 token=$4
ip link set lo up
"$binary" serve --config "$work/herald.toml" > "$work/herald.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
"$venv/bin/python" - <<'PY'
import json, time, urllib.request
from openapi_spec_validator import validate
for _ in range(100):
    try:
        urllib.request.urlopen("http://127.0.0.1:18470/readyz", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
doc = json.load(urllib.request.urlopen("http://127.0.0.1:18470/openapi.json", timeout=5))
validate(doc)
print("openapi.json: a valid OpenAPI 3.1 document")
PY
status=0
# Each role (what it may not do must be answered as documented too), and nobody.
for who in admin integration technician nobody; do
    auth=()
    case $who in
        admin) auth=(-H "Authorization: Bearer $token") ;;
        integration) auth=(-H "Authorization: Bearer $token-erp") ;;
        technician) auth=(-H "Authorization: Bearer $token-tech") ;;
    esac
    echo "schemathesis, as $who:"
    "$venv/bin/schemathesis" run http://127.0.0.1:18470/openapi.json --checks all "${auth[@]}" \
        --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" --no-color --seed "${SCHEMATHESIS_SEED:-1}" || status=1
done
if [ $status -ne 0 ]; then
    echo "----- herald log (tail) -----"; tail -50 "$work/herald.log"
fi
exit $status
INNER
