#!/usr/bin/env bash
# Builds the container image's runtime stage with podman and runs it the way users do:
# non-root, configuration from the environment only, the Jamf secret from a mounted file,
# SQLite in the /var/lib/jamf-sync volume, read-only root filesystem, HEALTHCHECK command,
# SIGTERM → exit 0.
#
# No image can be pulled here, so the base image is made with debootstrap (Debian bookworm,
# as debian:bookworm-slim) and the build stage (rust:1-bookworm) is replaced by the binary
# the test suite built: everything from `FROM ${RUNTIME_IMAGE} AS runtime` on is the shipped
# Dockerfile, unchanged, built with RUNTIME_IMAGE pinned to the local base image's digest. Needs root (apt, podman) and a built target/debug/jamf-sync.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v podman >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "podman/debootstrap missing and not root; container check skipped" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap runc >/dev/null
fi
# This VM: cgroup v1 hybrid and low rlimits; runc copes with both.
if [ ! -f /etc/containers/containers.conf ]; then
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
fi

base=docker.io/library/debian:bookworm-slim
if ! podman image exists "$base"; then
  rootfs="$(mktemp -d)"
  mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
  debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
  rm -rf "$rootfs"
fi

bin="$PWD/target/debug/jamf-sync"
[ -x "$bin" ] || cargo build --locked --quiet
work="$(mktemp -d)"
name="jamf-sync-ci-$$"
cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman volume rm -f "$name" >/dev/null 2>&1 || true
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/ctx"
cp "$bin" "$work/ctx/jamf-sync"
# The shipped Dockerfile with its build stage replaced by the prebuilt binary.
awk 'BEGIN{skip=0}
     /^FROM \$\{RUST_IMAGE\}/ {print "FROM scratch AS build"; print "COPY jamf-sync /src/target/release/jamf-sync"; skip=1; next}
     /^FROM / {skip=0}
     !skip {print}' Dockerfile > "$work/ctx/Dockerfile"
grep -q '^FROM ${RUNTIME_IMAGE} AS runtime' "$work/ctx/Dockerfile"
grep -q '^ARG RUNTIME_IMAGE=' "$work/ctx/Dockerfile"
digest="$(podman image inspect "$base" --format '{{.Digest}}')"
pinned="${base%%:*}@${digest}"
# Docker format: the OCI format has no HEALTHCHECK.
podman build --quiet --format docker --pull=never --network=host \
  --build-arg "RUNTIME_IMAGE=$pinned" -t localhost/jamf-sync:ci \
  "$work/ctx" > "$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
echo "built on $pinned"
echo "container image built"
podman image inspect localhost/jamf-sync:ci --format '{{json .Config.Healthcheck}}' | grep -q 'jamf-sync","healthcheck' \
  || { echo "the image has no HEALTHCHECK running jamf-sync healthcheck" >&2; exit 1; }

user="$(podman image inspect localhost/jamf-sync:ci --format '{{.Config.User}}')"
[ "$user" = "10001:10001" ] || { echo "image user is '$user', expected 10001:10001" >&2; exit 1; }
podman image inspect localhost/jamf-sync:ci --format '{{json .Config.Volumes}}' | grep -q '/var/lib/jamf-sync'
podman image inspect localhost/jamf-sync:ci --format '{{json .Config.Labels}}' | grep -q 'org.opencontainers.image.title'

"$bin" simulate --port 0 --computers 40 --mobile-devices 10 > "$work/sim.out" 2>/dev/null &
for _ in $(seq 1 50); do grep -q "http://" "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
sim_url="$(grep -o 'http://127.0.0.1:[0-9]*' "$work/sim.out" | head -n 1)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
printf 'sim-secret\n' > "$work/jamf_client_secret"
chmod 0444 "$work/jamf_client_secret"
podman volume create "$name" >/dev/null
# Host networking: the simulator listens on the host's loopback. Read-only root filesystem
# (as deploy/kubernetes runs it): state may only go to the volume and /tmp. Without systemd
# podman cannot set up the healthcheck timer and says so on stderr (kept in run.log); the
# check below runs the HEALTHCHECK itself.
podman run -d --name "$name" --network=host --read-only \
  -v "$name:/var/lib/jamf-sync" \
  -v "$work/jamf_client_secret:/run/secrets/jamf_client_secret:ro" \
  -e JAMF_SYNC__JAMF__URL="$sim_url" \
  -e JAMF_SYNC__JAMF__CLIENT_ID=jamf-sync-sim \
  -e JAMF_SYNC__JAMF__CLIENT_SECRET_FILE=/run/secrets/jamf_client_secret \
  -e JAMF_SYNC__SERVER__LISTEN="127.0.0.1:$port" \
  localhost/jamf-sync:ci >/dev/null 2> "$work/run.log" || { cat "$work/run.log" >&2; exit 1; }

ready=""
for _ in $(seq 1 120); do
  if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/readyz').status == 200 else 1)" 2>/dev/null; then
    ready=1; break
  fi
  sleep 0.5
done
[ -n "$ready" ] || { podman logs "$name" >&2; echo "container never became ready" >&2; exit 1; }
for _ in $(seq 1 60); do
  python3 -c "import urllib.request,json,sys; s=json.load(urllib.request.urlopen('http://127.0.0.1:$port/status')); sys.exit(0 if all(k['last_success'] for k in s['kinds']) else 1)" 2>/dev/null && break
  sleep 0.5
done
python3 -c "import urllib.request,json,sys; s=json.load(urllib.request.urlopen('http://127.0.0.1:$port/status')); sys.exit(0 if all(k['last_success'] for k in s['kinds']) else 1)" \
  || { podman logs "$name" >&2; echo "the container's start-up sync did not succeed" >&2; exit 1; }
[ "$(podman exec "$name" id -u)" = "10001" ] || { echo "container runs as root" >&2; exit 1; }
podman exec "$name" jamf-sync healthcheck >/dev/null
# The image's own HEALTHCHECK, run the way the engine runs it.
podman healthcheck run "$name" 2>/dev/null
podman exec "$name" test -s /var/lib/jamf-sync/jamf-sync.db
if podman logs "$name" 2>&1 | grep -q 'sim-secret'; then echo "secret in the container logs" >&2; exit 1; fi
podman stop --time 30 "$name" >/dev/null 2>> "$work/run.log"
code="$(podman inspect "$name" --format '{{.State.ExitCode}}')"
[ "$code" = "0" ] || { podman logs "$name" >&2; echo "exit code after SIGTERM: $code" >&2; exit 1; }

# A mounted config file (as deploy/kubernetes does): its settings must not be overridden by the
# image's environment. One-shot `sync` against a database path only the file names.
cat > "$work/config.toml" <<TOML
[jamf]
url = "$sim_url"
client_id = "jamf-sync-sim"
client_secret_file = "/run/secrets/jamf_client_secret"
[database]
url = "sqlite:///var/lib/jamf-sync/from-config-file.db"
TOML
chmod 0444 "$work/config.toml"
podman run --rm --network=host --read-only \
  -v "$name:/var/lib/jamf-sync" \
  -v "$work/jamf_client_secret:/run/secrets/jamf_client_secret:ro" \
  -v "$work/config.toml:/etc/jamf-sync/config.toml:ro" \
  -e JAMF_SYNC_CONFIG=/etc/jamf-sync/config.toml \
  localhost/jamf-sync:ci sync > "$work/oneshot.log" 2>&1 \
  || { cat "$work/oneshot.log" >&2; echo "one-shot sync with a config file failed" >&2; exit 1; }
podman run --rm -v "$name:/var/lib/jamf-sync" --entrypoint test localhost/jamf-sync:ci \
  -s /var/lib/jamf-sync/from-config-file.db 2>> "$work/run.log" \
  || { echo "the config file's database.url was not used" >&2; exit 1; }
echo "container check: ok (non-root 10001, env-only config, secret file, SQLite in the volume, read-only root, healthcheck, SIGTERM → 0, config file honoured)"
