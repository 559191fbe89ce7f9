"""Cross-reference check of deploy/kubernetes (kubernetes-validate checks each manifest against
the Kubernetes schemas; this checks what no schema can): the kustomization lists every
manifest, selectors and ports line up, the ConfigMap's config.toml is valid for the real binary
with the Secret mounted where it says, state and temporary files live on writable volumes, and
the secret is never a plain environment value.

Usage: check-kubernetes.py PATH_TO_JAMF_SYNC_BINARY"""
import os
import pathlib
import subprocess
import sys
import tempfile
import tomllib

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
k8s = root / "deploy" / "kubernetes"
binary = os.path.abspath(sys.argv[1])
problems = []

docs = {}
for path in sorted(k8s.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            docs[doc["kind"]] = (path.name, doc)

kustomization = docs["Kustomization"][1]
manifests = {name for name, doc in docs.values() if doc["kind"] != "Kustomization"}
if set(kustomization["resources"]) != manifests:
    problems.append(f"kustomization resources {kustomization['resources']} != files {sorted(manifests)}")

deployment = docs["Deployment"][1]
service = docs["Service"][1]
monitor = docs["ServiceMonitor"][1]
secret = docs["Secret"][1]
configmap = docs["ConfigMap"][1]
pvc = docs["PersistentVolumeClaim"][1]
pod = deployment["spec"]["template"]
spec = pod["spec"]
container = spec["containers"][0]

if deployment["spec"]["replicas"] != 1:
    problems.append("jamf-sync must run as exactly one replica")
if deployment["spec"]["strategy"]["type"] != "Recreate":
    problems.append("a ReadWriteOnce volume needs the Recreate strategy")
selector = deployment["spec"]["selector"]["matchLabels"]
if not selector.items() <= pod["metadata"]["labels"].items():
    problems.append("the Deployment's selector does not match its pod labels")
if not service["spec"]["selector"].items() <= pod["metadata"]["labels"].items():
    problems.append("the Service selects no pod of the Deployment")
if not monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items():
    problems.append("the ServiceMonitor selects no Service")
port_names = {p["name"] for p in container["ports"]}
service_ports = {p["name"]: p for p in service["spec"]["ports"]}
for p in service_ports.values():
    if p["targetPort"] not in port_names:
        problems.append(f"Service targetPort {p['targetPort']} is not a container port")
for ep in monitor["spec"]["endpoints"]:
    if ep["port"] not in service_ports:
        problems.append(f"ServiceMonitor port {ep['port']} is not a Service port")
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    if container[probe]["httpGet"]["port"] not in port_names:
        problems.append(f"{probe} uses an unknown port")

security = container["securityContext"]
if spec["securityContext"].get("runAsUser") != 10001 or not spec["securityContext"].get("runAsNonRoot"):
    problems.append("the pod must run as the image's user 10001, non-root")
if security.get("allowPrivilegeEscalation") is not False or security["capabilities"]["drop"] != ["ALL"]:
    problems.append("the container must drop all capabilities and privilege escalation")
env = {e["name"]: e.get("value") for e in container.get("env", [])}
if any("SECRET" in k or "PASSWORD" in k or "TOKEN" in k for k in env if not k.endswith("_FILE")):
    problems.append("a secret is passed as an environment value; mount it and use *_file")

mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
volumes = {v["name"]: v for v in spec["volumes"]}
for name in mounts:
    if name not in volumes:
        problems.append(f"volume mount {name} has no volume")
if volumes["config"]["configMap"]["name"] != configmap["metadata"]["name"]:
    problems.append("the config volume is not the ConfigMap")
if volumes["secrets"]["secret"]["secretName"] != secret["metadata"]["name"]:
    problems.append("the secrets volume is not the Secret")
if volumes["data"]["persistentVolumeClaim"]["claimName"] != pvc["metadata"]["name"]:
    problems.append("the data volume is not the PersistentVolumeClaim")
config_path = pathlib.PurePosixPath(env.get("JAMF_SYNC_CONFIG", ""))
if str(config_path.parent) != mounts["config"] or config_path.name not in configmap["data"]:
    problems.append(f"JAMF_SYNC_CONFIG {config_path} is not the mounted ConfigMap key")

config_text = configmap["data"][config_path.name]
config = tomllib.loads(config_text)
secret_file = pathlib.PurePosixPath(config["jamf"]["client_secret_file"])
if str(secret_file.parent) != mounts["secrets"] or secret_file.name not in secret["stringData"]:
    problems.append(f"jamf.client_secret_file {secret_file} is not a key of the mounted Secret")
db_url = config["database"]["url"]
if db_url.startswith("sqlite://") and not db_url[len("sqlite://"):].startswith(mounts["data"] + "/"):
    problems.append(f"the SQLite database {db_url} is not on the data volume {mounts['data']}")
if security.get("readOnlyRootFilesystem") and "/tmp" not in mounts.values():
    problems.append("a read-only root filesystem needs a writable /tmp")
listen_port = int(config["server"]["listen"].rsplit(":", 1)[1])
if container["ports"][0]["containerPort"] != listen_port:
    problems.append(f"containerPort is not server.listen's port {listen_port}")
grace = config.get("sync", {}).get("shutdown_grace_secs", 20)
if spec["terminationGracePeriodSeconds"] <= grace:
    problems.append("terminationGracePeriodSeconds must exceed sync.shutdown_grace_secs")

# The real binary reads the ConfigMap's file, with the Secret's value where the pod mounts it.
with tempfile.TemporaryDirectory() as tmp:
    cfg_file = pathlib.Path(tmp) / "config.toml"
    cfg_file.write_text(config_text)
    secret_path = pathlib.Path(tmp) / secret_file.name
    secret_value = secret["stringData"][secret_file.name]
    secret_path.write_text(secret_value)
    run_env = dict(os.environ, JAMF_SYNC__JAMF__CLIENT_SECRET_FILE=str(secret_path))
    out = subprocess.run([binary, "-c", str(cfg_file), "config", "check"], env=run_env,
                         capture_output=True, text=True, cwd=tmp)
    if out.returncode != 0:
        problems.append(f"jamf-sync config check refused the ConfigMap: {out.stderr.strip()}")
    if secret_value in out.stdout + out.stderr:
        problems.append("config check printed the secret")

# The PostgreSQL overlay (deploy/kubernetes-postgres): two replicas, a PodDisruptionBudget and
# a NetworkPolicy that select the Deployment's pods, no SQLite volume, and a config.toml the
# binary accepts with the database URL read from the Secret.
overlay = root / "deploy" / "kubernetes-postgres"
odocs = {}
for path in sorted(overlay.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict):
            odocs[doc["kind"]] = (path.name, doc)
ok = odocs["Kustomization"][1]
listed = {r for r in ok["resources"] if r.endswith(".yaml")} | {p["path"] for p in ok["patches"] if "path" in p}
present = {p.name for p in overlay.glob("*.yaml")} - {"kustomization.yaml"}
if listed != present:
    problems.append(f"overlay kustomization lists {sorted(listed)}, files are {sorted(present)}")
labels = pod["metadata"]["labels"]
pdb = odocs["PodDisruptionBudget"][1]
if not pdb["spec"]["selector"]["matchLabels"].items() <= labels.items():
    problems.append("the PodDisruptionBudget selects no jamf-sync pod")
if pdb["spec"].get("minAvailable") != 1:
    problems.append("the PodDisruptionBudget must keep one replica available")
netpol = odocs["NetworkPolicy"][1]
if not netpol["spec"]["podSelector"]["matchLabels"].items() <= labels.items():
    problems.append("the NetworkPolicy selects no jamf-sync pod")
allowed_in = {p["port"] for rule in netpol["spec"]["ingress"] for p in rule.get("ports", [])}
if container["ports"][0]["containerPort"] not in allowed_in:
    problems.append("the NetworkPolicy blocks the HTTP port")
allowed_out = {p["port"] for rule in netpol["spec"]["egress"] for p in rule.get("ports", [])}
for needed in (53, 443, 5432):
    if needed not in allowed_out:
        problems.append(f"the NetworkPolicy blocks egress to port {needed}")
ops = yaml.safe_load((overlay / "deployment-patch.yaml").read_text())
replicas = [o["value"] for o in ops if o["path"] == "/spec/replicas"]
if replicas != [2]:
    problems.append("the PostgreSQL overlay must run two replicas")
overlay_cfg = odocs["ConfigMap"][1]["data"]["config.toml"]
overlay_secret = odocs["Secret"][1]["stringData"]
ocfg = tomllib.loads(overlay_cfg)
url_file = pathlib.PurePosixPath(ocfg["database"]["url_file"])
if str(url_file.parent) != mounts["secrets"] or url_file.name not in overlay_secret:
    problems.append(f"database.url_file {url_file} is not a key of the overlay's Secret")
with tempfile.TemporaryDirectory() as tmp:
    cfg_file = pathlib.Path(tmp) / "config.toml"
    cfg_file.write_text(overlay_cfg)
    (pathlib.Path(tmp) / "jamf_client_secret").write_text("x")
    (pathlib.Path(tmp) / url_file.name).write_text(overlay_secret[url_file.name])
    run_env = dict(os.environ,
                   JAMF_SYNC__JAMF__CLIENT_SECRET_FILE=str(pathlib.Path(tmp) / "jamf_client_secret"),
                   JAMF_SYNC__DATABASE__URL_FILE=str(pathlib.Path(tmp) / url_file.name))
    out = subprocess.run([binary, "-c", str(cfg_file), "config", "check"], env=run_env,
                         capture_output=True, text=True, cwd=tmp)
    if out.returncode != 0:
        problems.append(f"jamf-sync config check refused the overlay's ConfigMap: {out.stderr.strip()}")
    elif "postgres" not in out.stdout:
        problems.append("the overlay's configuration does not use PostgreSQL")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"kubernetes manifests: ok ({len(manifests)} manifests, config accepted by jamf-sync; "
      "PostgreSQL overlay: 2 replicas, PDB, NetworkPolicy)")
