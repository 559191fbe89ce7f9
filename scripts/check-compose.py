"""Cross-reference check of deploy/compose (check-jsonschema validates it against the Compose
Specification; images cannot be pulled here, so it is not brought up): every file the compose
file mounts or names exists, Prometheus scrapes the jamf-sync service on its listen port, the
Grafana provisioning points at the mounted dashboard, secrets are files, not values, and the
real binary accepts jamf-sync's environment with the secret files where compose mounts them.

Usage: check-compose.py PATH_TO_JAMF_SYNC_BINARY"""
import json
import os
import pathlib
import re
import subprocess
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
compose_dir = root / "deploy" / "compose"
doc = yaml.safe_load((compose_dir / "docker-compose.yml").read_text())
problems = []
services = doc["services"]
for name in ("jamf-sync", "jamf-sync-2", "postgres", "prometheus", "grafana", "simulator"):
    if name not in services:
        problems.append(f"service {name} missing")

for name, svc in services.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("."):
            if not (compose_dir / src).exists():
                problems.append(f"{name}: mounted {src} does not exist")
build = services["jamf-sync"]["build"]["context"]
if not (compose_dir / build / "Dockerfile").exists():
    problems.append("jamf-sync build context has no Dockerfile")
for secret, spec in doc["secrets"].items():
    if not (compose_dir / spec["file"]).exists():
        problems.append(f"secret {secret}: {spec['file']} missing")

env = services["jamf-sync"]["environment"]
if any(k.endswith("SECRET") or k.endswith("PASSWORD") for k in env):
    problems.append("a secret is passed as a value; use *_FILE")
listen_port = env["JAMF_SYNC__SERVER__LISTEN"].rsplit(":", 1)[1]
prom = yaml.safe_load((compose_dir / "prometheus.yml").read_text())
targets = [f"{n}:{d['port']}" for sc in prom["scrape_configs"] for d in sc.get("dns_sd_configs", [])
           for n in d["names"]]
targets += [t for sc in prom["scrape_configs"] for s in sc.get("static_configs", []) for t in s["targets"]]
replicas = [n for n, svc in services.items() if n.startswith("jamf-sync")]
for name in replicas:
    if f"{name}:{listen_port}" not in targets:
        problems.append(f"prometheus does not scrape {name}:{listen_port}: {targets}")
# The second replica: the same service (image, environment, secrets) on PostgreSQL.
second = services.get("jamf-sync-2")
if second is None:
    problems.append("service jamf-sync-2 (the second replica) missing")
else:
    for key in ("image", "environment", "secrets", "depends_on"):
        if second.get(key) != services["jamf-sync"].get(key):
            problems.append(f"jamf-sync-2 differs from jamf-sync in {key}")
    if "DATABASE__URL_FILE" not in " ".join(second["environment"]):
        problems.append("the replicas must share the PostgreSQL database")
    if second["ports"] == services["jamf-sync"]["ports"]:
        problems.append("the two replicas publish the same host port")
if services["simulator"].get("network_mode") != "service:jamf-sync":
    problems.append("the simulator must share jamf-sync's network (plain http is localhost-only)")

providers = yaml.safe_load((compose_dir / "grafana/provisioning/dashboards/jamf-sync.yml").read_text())
path = providers["providers"][0]["options"]["path"]
if not any(v.split(":")[1].startswith(path) for v in services["grafana"]["volumes"]):
    problems.append(f"grafana dashboards path {path} is not mounted")
dashboard = json.loads((root / "deploy/grafana/jamf-sync.json").read_text())
if dashboard.get("uid") != "jamf-sync":
    problems.append("dashboard uid changed")

# jamf-sync's environment as compose resolves it (defaults of ${VAR:-default}), the secrets at
# their compose source files instead of /run/secrets.
binary = os.path.abspath(sys.argv[1])
run_env = {k: v for k, v in os.environ.items() if not k.startswith("JAMF_SYNC")}
for key, value in env.items():
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
    if value.startswith("/run/secrets/"):
        value = str(compose_dir / doc["secrets"][value.rsplit("/", 1)[1]]["file"])
    run_env[key] = value
out = subprocess.run([binary, "config", "check"], env=run_env, capture_output=True, text=True)
if out.returncode != 0:
    problems.append(f"jamf-sync config check refused the compose environment: {out.stderr.strip()}")
for secret_file in (compose_dir / "secrets").iterdir():
    if secret_file.name != "README.md" and secret_file.read_text().strip() in out.stdout + out.stderr:
        problems.append(f"config check printed the secret {secret_file.name}")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"compose example: ok ({len(services)} services)")
