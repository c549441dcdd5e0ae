#!/usr/bin/env python3
"""Checks deploy/ against the server it deploys (`make test-deploy`).

What can be checked without Docker or Kubernetes:
- the YAML files parse (compose, every k8s manifest) and the JSON configs in them decode, with only
  keys that ServerConfigurationFile.swift knows;
- every DEVICEAUTH_* variable used exists in DeviceAuthServerCommand.swift;
- ports agree: the server's default, the Dockerfile's ENV/EXPOSE/HEALTHCHECK, compose, nginx's
  upstreams, the k8s containerPort, probes and Service;
- probe paths are real routes (readiness /readyz, liveness /healthz);
- names agree: images, labels and selectors, Secret keys, ConfigMap keys and mount paths, the
  non-root uid, the resource bundle the Dockerfile copies, the user header nginx sets;
- deploy/nginx.conf passes `nginx -t` (Debian's nginx), on a copy whose upstream host names are
  rewritten to 127.0.0.1: nginx resolves upstream names while loading its configuration, and the
  compose service names (api-1, …) only resolve inside the compose network;
- deploy/nginx.conf running in front of a stub node: /metrics however spelled (/metrics/, /metrics//,
  //metrics, %6D…) is answered 404 by nginx and never reaches a node;
- deploy/docker-compose.sentinel.yml and deploy/sentinel.conf: the override's redis+sentinel:// URL
  names the sentinel services, sentinel.conf's port and master name and only URL options the Redis
  client reads, its password files are mounted secrets; replicas start with --replicaof the monitored
  primary; live, the rendered data-node and sentinel files run on redis-server / redis-sentinel
  (replication, CKQUORUM, an API node through the URL, SENTINEL FAILOVER followed by the node);
- deploy/redis.conf: noeviction, AOF everysec, and an ACL user allowed exactly the commands the
  product sends (read from the Swift sources and the Lua scripts), on its key prefix only — checked
  on the text and on a real redis-server started with a copy of the file (ACL DRYRUN), and, when the
  debug build exists, by a real API node and a short load test running as that user.

Run: python3 Tests/Deploy/check_deploy.py [-v]        (from the repository root or anywhere)
Env: DEPLOY_CHECK_BUILD_DIR (default .build/debug) for the live ACL run's binaries;
     DEPLOY_CHECK_REQUIRE_LIVE=1 turns a missing build into a failure instead of a skip.
The MutationTests copy the tree, break one thing at a time and expect the checks to fail.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - the Makefile installs python3-yaml
    sys.exit("check_deploy: python3 'yaml' module missing (apt-get install python3-yaml)")

REPO = Path(__file__).resolve().parents[2]
ACL_USER = "deviceauth"
# The user that loads the product's Redis functions (FUNCTION LOAD); the application user only calls them.
LOADER_USER = "deviceauth-loader"
# Sent only by the function loader user, never by the application user.
LOADER_COMMANDS = {"function|load"}
# Commands whose second word is a subcommand (ACL rules name them as command|subcommand).
CONTAINER_COMMANDS = {"config", "client", "cluster", "script", "acl", "memory", "object", "command", "function", "xinfo", "module", "slowlog", "latency"}


def read(path):
    return Path(path).read_text(encoding="utf-8")


def code_lines(text):
    """Swift source without // comments (doc comments mention commands that are never sent)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def free_port():
    """A free loopback port below the ephemeral range (see Tests/Support/free-port.py)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Support", "free-port.py")
    return int(subprocess.check_output([sys.executable, script], text=True))


class Deploy:
    """Facts from the sources and the deploy files of one tree; each check returns a list of problems."""

    def __init__(self, root):
        self.root = Path(root)
        d = self.root / "deploy"
        self.dockerfile = read(d / "Dockerfile")
        self.nginx = read(d / "nginx.conf")
        self.redis_conf = read(d / "redis.conf")
        self.compose = yaml.safe_load(read(d / "docker-compose.yml"))
        self.compose_sentinel = yaml.safe_load(read(d / "docker-compose.sentinel.yml"))
        self.sentinel_conf = read(d / "sentinel.conf")
        self.k8s = {}
        self.k8s_files = {}
        self.kustomization = None
        for path in sorted((d / "k8s").glob("*.yaml")):
            for doc in yaml.safe_load_all(read(path)):
                if not doc:
                    continue
                if doc.get("kind") == "Kustomization":
                    self.kustomization = doc
                    continue
                self.k8s[(doc["kind"], doc["metadata"]["name"])] = doc
                self.k8s_files.setdefault(path.name, []).append(doc["kind"])
        src = self.root / "Sources"
        command = read(src / "deviceauth-server/DeviceAuthServerCommand.swift")
        self.server_env = set(re.findall(r"\bDEVICEAUTH_[A-Z_]+\b", command))
        port = re.search(r'env:\s*"DEVICEAUTH_PORT",\s*default:\s*(\d+)', command)
        self.default_port = int(port.group(1)) if port else None
        # The routes as the OpenAPI document states them (OpenAPITests checks the router serves exactly these).
        document = json.loads(read(src / "DeviceAuthorizationHTTP/OpenAPI/openapi.json"))
        self.get_routes = {path for path, item in document["paths"].items() if "get" in item}
        self.config_keys, self.client_keys, self.nested_config_keys = self._config_keys(read(src / "DeviceAuthorizationHTTP/Server/ServerConfigurationFile.swift"))
        server = read(src / "DeviceAuthorizationHTTP/Server/DeviceAuthorizationServer.swift")
        prefix = re.search(r'keyPrefix:\s*file\.keyPrefix\s*\?\?\s*"([^"]+)"', server)
        self.default_key_prefix = prefix.group(1) if prefix else None
        package = read(self.root / "Package.swift")
        self.package_name = re.search(r'Package\(\s*name:\s*"([^"]+)"', package).group(1)
        self.resource_targets = []
        for match in re.finditer(r"resources:", package):
            names = re.findall(r'\.(?:target|executableTarget)\(\s*name:\s*"([^"]+)"', package[: match.start()])
            self.resource_targets.append(names[-1])

    @staticmethod
    def _config_keys(text):
        """Coding keys per struct of ServerConfigurationFile.swift: (top level, Client, {raw key: nested keys})."""
        structs, stack, depth = {}, [], 0
        properties = {}
        for line in code_lines(text).splitlines():
            struct = re.search(r"\bstruct (\w+)", line)
            if struct and "{" in line:
                stack.append((struct.group(1), depth))
            name = stack[-1][0] if stack else None
            prop = re.search(r"\bvar (\w+): \[?(\w+)\]?\??", line)
            if prop and name:
                properties.setdefault(name, {})[prop.group(1)] = prop.group(2)
            if line.strip().startswith("case ") and name and structs.get(f"{name}#open"):
                for item in line.strip()[5:].split(","):
                    item = item.strip()
                    raw = re.search(r'(\w+)\s*=\s*"([^"]+)"', item)
                    case, key = (raw.group(1), raw.group(2)) if raw else (item, item)
                    structs.setdefault(name, {})[key] = case
            if "enum CodingKeys" in line and name:
                structs[f"{name}#open"] = True
            depth += line.count("{") - line.count("}")
            if "}" in line and name and structs.get(f"{name}#open") and depth <= stack[-1][1] + 1:
                structs[f"{name}#open"] = False
            while stack and depth <= stack[-1][1]:
                stack.pop()
        top = structs.get("ServerConfigurationFile", {})
        client = structs.get("Client", {})
        nested = {}
        for key, case in top.items():
            kind = properties.get("ServerConfigurationFile", {}).get(case)
            if kind in structs and kind not in ("Client",):
                nested[key] = set(structs[kind])
        return set(top), set(client), nested

    # ---------------------------------------------------------------- helpers

    def k8s_doc(self, kind):
        docs = [doc for (k, _), doc in self.k8s.items() if k == kind]
        return docs[0] if len(docs) == 1 else None

    def api_services(self):
        return {name: svc for name, svc in self.compose.get("services", {}).items() if str(svc.get("image", "")).startswith("deviceauth-server")}

    def dockerfile_final_stage(self):
        stages = re.split(r"(?m)^FROM ", self.dockerfile)
        return "FROM " + stages[-1]

    def dockerfile_env(self):
        env = {}
        for block in re.findall(r"(?m)^ENV ((?:.*\\\n)*.*)", self.dockerfile_final_stage()):
            for name, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", block):
                env[name] = value.strip('"')
        return env

    def container(self):
        deployment = self.k8s_doc("Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0] if deployment else None

    def k8s_env(self):
        return {e["name"]: e for e in (self.container() or {}).get("env", [])}

    def config_documents(self):
        """(where, parsed JSON) of every server configuration shipped in deploy/."""
        result = []
        for file, compose in (("docker-compose.yml", self.compose), ("docker-compose.sentinel.yml", self.compose_sentinel)):
            for name, cfg in (compose.get("configs") or {}).items():
                if "content" in cfg:
                    result.append((f"{file} configs.{name}", cfg["content"]))
        for (kind, name), doc in self.k8s.items():
            if kind == "ConfigMap":
                for key, value in (doc.get("data") or {}).items():
                    if key.endswith(".json"):
                        result.append((f"k8s ConfigMap {name} {key}", value))
        parsed = []
        for where, text in result:
            try:
                parsed.append((where, json.loads(text)))
            except json.JSONDecodeError as error:
                parsed.append((where, error))
        return parsed

    # ---------------------------------------------------------------- checks

    def check_env_names(self):
        problems = []
        used = {}
        for name in re.findall(r"\bDEVICEAUTH_[A-Z_]+\b", self.dockerfile):
            used.setdefault(name, "deploy/Dockerfile")
        for svc_name, svc in self.api_services().items():
            for name in (svc.get("environment") or {}):
                used.setdefault(name, f"docker-compose.yml {svc_name}")
        for name in self.k8s_env():
            used.setdefault(name, "k8s Deployment")
        for name, where in sorted(used.items()):
            if name.startswith("DEVICEAUTH_") and name not in self.server_env:
                problems.append(f"{where}: {name} is not read by deviceauth-server (DeviceAuthServerCommand.swift knows {sorted(self.server_env)})")
        for svc_name, svc in self.api_services().items():
            env = svc.get("environment") or {}
            for required in ("DEVICEAUTH_REDIS_URL", "DEVICEAUTH_SECRET", "DEVICEAUTH_SIGNING_KEY", "DEVICEAUTH_CONFIG"):
                if required not in env:
                    problems.append(f"docker-compose.yml {svc_name}: {required} missing (production mode needs it)")
        for required in ("DEVICEAUTH_REDIS_URL", "DEVICEAUTH_SECRET", "DEVICEAUTH_SIGNING_KEY", "DEVICEAUTH_CONFIG"):
            if required not in self.k8s_env():
                problems.append(f"k8s Deployment: {required} missing (production mode needs it)")
        return problems

    def check_ports(self):
        problems = []
        if self.default_port is None:
            return ["cannot find the default port in DeviceAuthServerCommand.swift"]
        env = self.dockerfile_env()
        port = int(env.get("DEVICEAUTH_PORT", self.default_port))
        if env.get("DEVICEAUTH_HOST") not in ("0.0.0.0", "::"):
            problems.append(f"deploy/Dockerfile: DEVICEAUTH_HOST={env.get('DEVICEAUTH_HOST')}; the server's default 127.0.0.1 is unreachable from outside the container")
        final = self.dockerfile_final_stage()
        exposed = [int(p) for p in re.findall(r"(?m)^EXPOSE (\d+)", final)]
        if exposed != [port]:
            problems.append(f"deploy/Dockerfile: EXPOSE {exposed} but the server listens on {port}")
        health = re.search(r"(?ms)^HEALTHCHECK .*?CMD (.*?)(?<!\\)$", final)
        if not health:
            problems.append("deploy/Dockerfile: no HEALTHCHECK in the final stage")
        else:
            url = re.search(r"http://127\.0\.0\.1:([^/]+)(/[\w./-]*)", health.group(1))
            if not url or url.group(1) not in (str(port), "${DEVICEAUTH_PORT}", "$DEVICEAUTH_PORT"):
                problems.append(f"deploy/Dockerfile: HEALTHCHECK does not call 127.0.0.1:{port}")
            elif url.group(2) != "/healthz":
                problems.append(f"deploy/Dockerfile: HEALTHCHECK calls {url.group(2)}, not the liveness route /healthz")
        # compose: every API node listens where nginx and the healthcheck look
        api = self.api_services()
        if len(api) < 2:
            problems.append(f"docker-compose.yml: {len(api)} API node(s); expected several behind nginx")
        upstreams = re.findall(r"(?m)^\s*server\s+([\w.-]+):(\d+)", self.nginx)
        upstream_hosts = {host for host, _ in upstreams}
        if upstream_hosts != set(api):
            problems.append(f"deploy/nginx.conf: upstream servers {sorted(upstream_hosts)} but compose API nodes are {sorted(api)}")
        for name, svc in api.items():
            env = svc.get("environment") or {}
            svc_port = int(env.get("DEVICEAUTH_PORT", port))
            for host, upstream_port in upstreams:
                if host == name and int(upstream_port) != svc_port:
                    problems.append(f"deploy/nginx.conf: {host}:{upstream_port} but {name} listens on {svc_port}")
            for exposed_port in svc.get("expose") or []:
                if int(exposed_port) != svc_port:
                    problems.append(f"docker-compose.yml {name}: expose {exposed_port} but it listens on {svc_port}")
            test = " ".join(map(str, (svc.get("healthcheck") or {}).get("test", [])))
            url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w./-]*)", test)
            if not url:
                problems.append(f"docker-compose.yml {name}: healthcheck does not call the node over HTTP")
            else:
                if int(url.group(1)) != svc_port:
                    problems.append(f"docker-compose.yml {name}: healthcheck port {url.group(1)} but it listens on {svc_port}")
                if url.group(2) not in self.get_routes:
                    problems.append(f"docker-compose.yml {name}: healthcheck path {url.group(2)} is not a route of the server")
            if env.get("DEVICEAUTH_HOST", self.dockerfile_env().get("DEVICEAUTH_HOST")) not in ("0.0.0.0", "::"):
                problems.append(f"docker-compose.yml {name}: must listen on all interfaces")
        nginx_ports = (self.compose.get("services", {}).get("nginx") or {}).get("ports", [])
        listen = set(re.findall(r"(?m)^\s*listen\s+(?:\[::\]:)?(\d+)", self.nginx))
        for mapping in nginx_ports:
            inner = str(mapping).split(":")[-1]
            if inner not in listen:
                problems.append(f"docker-compose.yml nginx: publishes container port {inner} but nginx.conf listens on {sorted(listen)}")
        # k8s
        container = self.container()
        if container is None:
            return problems + ["k8s: exactly one Deployment expected"]
        k8s_env = self.k8s_env()
        k8s_port = int(k8s_env.get("DEVICEAUTH_PORT", {}).get("value", port))
        if k8s_env.get("DEVICEAUTH_HOST", {}).get("value", env.get("DEVICEAUTH_HOST")) not in ("0.0.0.0", "::"):
            problems.append("k8s Deployment: the container must listen on all interfaces (DEVICEAUTH_HOST)")
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        metrics_port = k8s_env.get("DEVICEAUTH_METRICS_PORT", {}).get("value")
        metrics_port = int(metrics_port) if metrics_port else None
        if list(ports.values()) != [k8s_port] + ([metrics_port] if metrics_port else []):
            problems.append(f"k8s Deployment: containerPort {list(ports.values())} but the server listens on {k8s_port}"
                            + (f" and {metrics_port} (metrics)" if metrics_port else ""))
        def resolve(ref):
            return ports.get(ref) if isinstance(ref, str) else ref
        for probe_name, expected in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", None)):
            probe = container.get(probe_name)
            if probe is None:
                if probe_name != "startupProbe":
                    problems.append(f"k8s Deployment: no {probe_name}")
                continue
            get = probe.get("httpGet") or {}
            if resolve(get.get("port")) != k8s_port:
                problems.append(f"k8s Deployment: {probe_name} port {get.get('port')} is not the server's port {k8s_port}")
            if get.get("path") not in self.get_routes:
                problems.append(f"k8s Deployment: {probe_name} path {get.get('path')} is not a GET route of the server ({sorted(self.get_routes)})")
            elif expected and get.get("path") != expected:
                problems.append(f"k8s Deployment: {probe_name} should use {expected}, not {get.get('path')}")
        service = self.k8s_doc("Service")
        if service is None:
            problems.append("k8s: exactly one Service expected")
        else:
            for p in service["spec"]["ports"]:
                if resolve(p.get("targetPort")) != k8s_port:
                    problems.append(f"k8s Service: targetPort {p.get('targetPort')} does not reach the container port {k8s_port}")
        annotations = self.k8s_doc("Deployment")["spec"]["template"]["metadata"].get("annotations", {})
        scrape_port = metrics_port or k8s_port
        if "prometheus.io/port" in annotations and int(annotations["prometheus.io/port"]) != scrape_port:
            problems.append(f"k8s Deployment: prometheus.io/port {annotations['prometheus.io/port']} is not {scrape_port}"
                            + (" (DEVICEAUTH_METRICS_PORT)" if metrics_port else ""))
        # The NetworkPolicy admits the node's ports by name: each name must be a container port.
        policy = self.k8s_doc("NetworkPolicy")
        if policy is None:
            problems.append("k8s: no NetworkPolicy (any pod could reach the nodes and try the user header)")
        else:
            labels = self.k8s_doc("Deployment")["spec"]["template"]["metadata"]["labels"]
            selector = policy["spec"].get("podSelector", {}).get("matchLabels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                problems.append(f"k8s NetworkPolicy: podSelector {selector} does not select the API pods")
            for rule in policy["spec"].get("ingress", []):
                if not rule.get("from"):
                    problems.append("k8s NetworkPolicy: an ingress rule without 'from' admits every pod")
                for entry in rule.get("ports", []):
                    if resolve(entry.get("port")) is None:
                        problems.append(f"k8s NetworkPolicy: port {entry.get('port')} is not a container port ({sorted(ports)})")
        if "prometheus.io/path" in annotations and annotations["prometheus.io/path"] not in self.get_routes:
            problems.append(f"k8s Deployment: prometheus.io/path {annotations['prometheus.io/path']} is not a route")
        return problems

    def check_names(self):
        problems = []
        final = self.dockerfile_final_stage()
        # Dockerfile: release build of the server, its resource bundle, a non-root user.
        if not re.search(r"swift build -c release --product deviceauth-server\b", self.dockerfile):
            problems.append("deploy/Dockerfile: does not build the deviceauth-server product in release mode")
        if len(re.findall(r"(?m)^FROM ", self.dockerfile)) < 2:
            problems.append("deploy/Dockerfile: not a multi-stage build")
        for target in self.resource_targets:
            bundle = f"{self.package_name}_{target}.resources"
            if bundle not in self.dockerfile:
                problems.append(f"deploy/Dockerfile: does not copy the resource bundle {bundle} (Bundle.module looks for it next to the executable)")
        if "libhiredis0.14" not in self.dockerfile:
            problems.append("deploy/Dockerfile: the runtime stage needs libhiredis0.14")
        if not re.search(r'ENTRYPOINT \["[^"]*deviceauth-server"\]', final):
            problems.append("deploy/Dockerfile: the final stage's ENTRYPOINT is not deviceauth-server")
        users = re.findall(r"(?m)^USER (\S+)", self.dockerfile)
        uid = users[-1].split(":")[0] if users else None
        if uid is None or uid in ("0", "root"):
            problems.append("deploy/Dockerfile: the image must run as a non-root USER")
        # compose: API nodes built from deploy/Dockerfile, nginx mounts this nginx.conf, Redis deploy/redis.conf.
        for name, svc in self.api_services().items():
            build = svc.get("build") or {}
            if build.get("dockerfile") != "deploy/Dockerfile":
                problems.append(f"docker-compose.yml {name}: not built from deploy/Dockerfile")
        configs = self.compose.get("configs") or {}
        def mounted(service, suffix):
            for ref in (self.compose["services"].get(service) or {}).get("configs", []):
                if configs.get(ref["source"], {}).get("file", "").endswith(suffix):
                    return ref["target"]
            return None
        user_file = re.search(r"auth_basic_user_file\s+(\S+);", self.nginx)
        nginx_secrets = [sec if isinstance(sec, str) else sec.get("target", sec["source"]) for sec in (self.compose["services"].get("nginx") or {}).get("secrets", [])]
        if user_file and not any(user_file.group(1) in (f"/run/secrets/{sec}", sec) for sec in nginx_secrets):
            problems.append(f"deploy/nginx.conf: auth_basic_user_file {user_file.group(1)} is not mounted into the nginx service ({nginx_secrets})")
        if mounted("nginx", "nginx.conf") != "/etc/nginx/conf.d/default.conf":
            problems.append("docker-compose.yml nginx: deploy/nginx.conf must be mounted as /etc/nginx/conf.d/default.conf (it is an http-level include)")
        redis_target = mounted("redis", "redis.conf")
        if not redis_target or redis_target not in " ".join(map(str, self.compose["services"]["redis"].get("command", []))):
            problems.append("docker-compose.yml redis: does not start redis-server from deploy/redis.conf")
        for name, svc in self.api_services().items():
            env = svc.get("environment") or {}
            targets = [ref["target"] for ref in svc.get("configs", [])]
            if env.get("DEVICEAUTH_CONFIG") not in targets:
                problems.append(f"docker-compose.yml {name}: DEVICEAUTH_CONFIG {env.get('DEVICEAUTH_CONFIG')} is not a mounted config ({targets})")
            secrets = [s if isinstance(s, str) else s.get("target", s["source"]) for s in svc.get("secrets", [])]
            key = env.get("DEVICEAUTH_SIGNING_KEY", "")
            if not any(key in (f"/run/secrets/{s}", s) for s in secrets):
                problems.append(f"docker-compose.yml {name}: DEVICEAUTH_SIGNING_KEY {key} is not a mounted secret")
            url = str(env.get("DEVICEAUTH_REDIS_URL", ""))
            if not re.match(rf"redis://{ACL_USER}:[^@]+@redis:\d+(/\d+)?(\?|$)", url):
                problems.append(f"docker-compose.yml {name}: DEVICEAUTH_REDIS_URL should log in as the ACL user {ACL_USER} at redis")
            loader_file = re.search(r"[?&]function_loader_password_file=([^&]+)", url)
            if f"function_loader_user={LOADER_USER}" not in url or not loader_file:
                problems.append(f"docker-compose.yml {name}: DEVICEAUTH_REDIS_URL should name the function loader {LOADER_USER} and its password file")
            elif not any(loader_file.group(1) in (f"/run/secrets/{s}", s) for s in secrets):
                problems.append(f"docker-compose.yml {name}: the function loader's password file {loader_file.group(1)} is not a mounted secret")
        # compose's load-test service: a real subcommand and real options of deviceauth-loadtest.
        loadtest = self.compose["services"].get("loadtest")
        if loadtest:
            if (loadtest.get("build") or {}).get("target") not in re.findall(r"(?m)^FROM \S+ AS (\S+)", self.dockerfile):
                problems.append("docker-compose.yml loadtest: its build target is not a stage of deploy/Dockerfile")
            args = [str(a) for a in loadtest.get("command", [])]
            source = self.root / "Sources/deviceauth-loadtest/HTTP/HTTPLoadCommand.swift"
            text = read(source) if source.exists() else ""
            if args and args[0] != "http":
                problems.append(f"docker-compose.yml loadtest: runs '{args[0]}', expected the 'http' subcommand")
            for flag in (a[2:] for a in args if a.startswith("--")):
                camel = re.sub(r"-(\w)", lambda m: m.group(1).upper(), flag)
                declared = re.search(rf'customLong\("{re.escape(flag)}"\)', text) or re.search(
                    rf'@(?:Option|Flag)\b[^\n]*\n?\s*var {camel}\b', text)
                if not declared:
                    problems.append(f"docker-compose.yml loadtest: --{flag} is not an option of deviceauth-loadtest http")
        # k8s: image, selectors, uid, Secret keys, ConfigMap mount.
        deployment = self.k8s_doc("Deployment")
        container = self.container()
        if deployment is None or container is None:
            return problems + ["k8s: exactly one Deployment expected"]
        image_repo = lambda image: image.rsplit("/", 1)[-1].split(":")[0]
        compose_images = {image_repo(svc["image"]) for svc in self.api_services().values()}
        if {image_repo(container["image"])} != compose_images:
            problems.append(f"k8s Deployment image {container['image']} is not the compose image {compose_images}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        def selects(selector, where):
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                problems.append(f"{where}: selector {selector} does not match the pod labels {labels}")
        selects(deployment["spec"]["selector"]["matchLabels"], "k8s Deployment")
        if self.k8s_doc("Service"):
            selects(self.k8s_doc("Service")["spec"]["selector"], "k8s Service")
        if self.k8s_doc("PodDisruptionBudget"):
            selects(self.k8s_doc("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], "k8s PodDisruptionBudget")
        else:
            problems.append("k8s: no PodDisruptionBudget")
        hpa = self.k8s_doc("HorizontalPodAutoscaler")
        if not hpa:
            problems.append("k8s: no HorizontalPodAutoscaler")
        elif (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) != ("Deployment", deployment["metadata"]["name"]):
            problems.append(f"k8s HorizontalPodAutoscaler: scales {hpa['spec']['scaleTargetRef']}, not Deployment {deployment['metadata']['name']}")
        if self.kustomization is not None:
            listed = set(self.kustomization.get("resources", []))
            for name, kinds in sorted(self.k8s_files.items()):
                if "Secret" in kinds and name in listed:
                    problems.append(f"k8s kustomization.yaml: lists {name}; applying its placeholders would overwrite the real Secret")
                elif "Secret" not in kinds and name not in listed:
                    problems.append(f"k8s kustomization.yaml: does not list {name}")
            for name in sorted(listed - set(self.k8s_files)):
                problems.append(f"k8s kustomization.yaml: lists {name}, which does not exist")
        pod = deployment["spec"]["template"]["spec"]
        run_as = (container.get("securityContext") or {}).get("runAsUser", (pod.get("securityContext") or {}).get("runAsUser"))
        if uid is not None and str(run_as) != uid:
            problems.append(f"k8s Deployment: runAsUser {run_as} is not the image's USER {uid}")
        secrets = {name: doc for (kind, name), doc in self.k8s.items() if kind == "Secret"}
        def secret_has(name, key, where):
            if name not in secrets:
                problems.append(f"{where}: Secret {name} is not among the manifests")
            elif key not in (secrets[name].get("stringData") or {}) and key not in (secrets[name].get("data") or {}):
                problems.append(f"{where}: Secret {name} has no key {key}")
        for env_name, entry in self.k8s_env().items():
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret_has(ref["name"], ref["key"], f"k8s Deployment env {env_name}")
        mounts = {m["name"]: m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])}
        files = {}
        for volume in pod.get("volumes", []):
            if volume["name"] not in mounts:
                continue
            source = volume.get("configMap") or volume.get("secret")
            if not source:
                continue
            for item in source.get("items", []):
                files[f"{mounts[volume['name']]}/{item['path']}"] = (volume, item["key"])
                if "secret" in volume:
                    secret_has(volume["secret"]["secretName"], item["key"], f"k8s Deployment volume {volume['name']}")
                elif ("ConfigMap", volume["configMap"]["name"]) not in self.k8s or item["key"] not in self.k8s[("ConfigMap", volume["configMap"]["name"])].get("data", {}):
                    problems.append(f"k8s Deployment volume {volume['name']}: ConfigMap {volume['configMap']['name']} has no key {item['key']}")
        for env_name in ("DEVICEAUTH_CONFIG", "DEVICEAUTH_SIGNING_KEY"):
            path = self.k8s_env().get(env_name, {}).get("value")
            if path not in files:
                problems.append(f"k8s Deployment: {env_name}={path} is not a mounted file ({sorted(files)})")
        return problems

    def check_configs(self):
        problems = []
        documents = self.config_documents()
        if not documents:
            problems.append("no server configuration found in docker-compose.yml configs or a k8s ConfigMap")
        for where, config in documents:
            if isinstance(config, Exception):
                problems.append(f"{where}: not valid JSON: {config}")
                continue
            for key in sorted(set(config) - self.config_keys):
                problems.append(f"{where}: unknown key {key!r} (ServerConfigurationFile knows {sorted(self.config_keys)})")
            for key, allowed in self.nested_config_keys.items():
                if isinstance(config.get(key), dict):
                    for inner in sorted(set(config[key]) - allowed):
                        problems.append(f"{where}: {key}: unknown key {inner!r} (known: {sorted(allowed)})")
            for client in config.get("clients", []):
                for key in sorted(set(client) - self.client_keys):
                    problems.append(f"{where}: client {client.get('client_id')}: unknown key {key!r}")
            if not config.get("clients"):
                problems.append(f"{where}: no clients (the server refuses to start without)")
            for forbidden in ("secret", "redis_url", "users"):
                if forbidden in config:
                    problems.append(f"{where}: {forbidden!r} belongs in a secret / is development-only, not in the shipped config")
            prefix = config.get("key_prefix", self.default_key_prefix)
            if f"~{prefix}:*" not in self.redis_conf:
                problems.append(f"{where}: key_prefix {prefix!r} but the ACL in deploy/redis.conf does not allow ~{prefix}:*")
            header = config.get("user_header")
            if header:
                if not config.get("trusted_proxies"):
                    problems.append(f"{where}: user_header without trusted_proxies: nobody can sign in")
                if where.startswith("docker-compose"):
                    sets = re.findall(rf"(?mi)^\s*proxy_set_header\s+{re.escape(header)}\s+(\S+);", self.nginx)
                    if "$remote_user" not in sets:
                        problems.append(f"deploy/nginx.conf: never sets {header} to the signed-in user, but the nodes read it")
                    if '""' not in sets:
                        problems.append(f"deploy/nginx.conf: does not clear a client-sent {header} on the other locations")
                    nginx_ip = (((self.compose["services"].get("nginx") or {}).get("networks") or {}).get("backend") or {}).get("ipv4_address")
                    if not nginx_ip or not any(p.split("/")[0] == nginx_ip for p in config.get("trusted_proxies", [])):
                        problems.append(f"{where}: nginx's address {nginx_ip} is not in trusted_proxies")
        return problems

    # ---------------------------------------------------------------- Sentinel (docker-compose.sentinel.yml)

    def sentinel_url_options(self):
        """Query options the Redis URL parser reads (RedisClient/Configuration, RedisClient/Sentinel)."""
        names = set()
        for path in sorted((self.root / "Sources/RedisClient").rglob("*.swift")):
            names |= set(re.findall(r'\b(?:query|options)\["([a-z_]+)"\]', code_lines(read(path))))
        return names

    def sentinel_settings(self):
        """sentinel.conf's port, master name, monitored host and port, quorum."""
        port = re.search(r"(?m)^port (\d+)", self.sentinel_conf)
        monitor = re.search(r"(?m)^sentinel monitor (\S+) (\S+) (\d+) (\d+)", self.sentinel_conf)
        return {"port": int(port.group(1)) if port else None,
                "master": monitor.group(1) if monitor else None, "host": monitor.group(2) if monitor else None,
                "data_port": int(monitor.group(3)) if monitor else None, "quorum": int(monitor.group(4)) if monitor else None}

    def check_sentinel(self):
        problems = []
        where = "docker-compose.sentinel.yml"
        base, override = self.compose.get("services", {}), self.compose_sentinel.get("services", {})
        settings = self.sentinel_settings()
        if None in settings.values():
            return [f"deploy/sentinel.conf: needs a port and one 'sentinel monitor NAME HOST PORT QUORUM' line ({settings})"]
        sentinels = sorted(name for name, svc in override.items() if "exec redis-sentinel " in " ".join(map(str, svc.get("command", []))))
        data = sorted(name for name, svc in override.items() if "exec redis-server " in " ".join(map(str, svc.get("command", []))))
        if len(sentinels) < 3 or len(sentinels) % 2 == 0:
            problems.append(f"{where}: {len(sentinels)} sentinels; run an odd number, at least 3")
        if not (len(sentinels) // 2 < settings["quorum"] <= len(sentinels)):
            problems.append(f"deploy/sentinel.conf: quorum {settings['quorum']} for {len(sentinels)} sentinels (use a majority)")
        if settings["host"] not in data or len(data) < 2:
            problems.append(f"deploy/sentinel.conf: monitors {settings['host']}, but the data nodes are {data} (a primary and replicas)")
        redis_port = re.search(r"(?m)^port (\d+)", self.redis_conf)
        if not redis_port or int(redis_port.group(1)) != settings["data_port"]:
            problems.append(f"deploy/sentinel.conf: monitors port {settings['data_port']}, redis.conf listens on {redis_port and redis_port.group(1)}")
        for name in data:
            command = " ".join(map(str, override[name].get("command", [])))
            if "/etc/deviceauth/redis.conf" not in command or "redis-config" not in [c["source"] for c in override[name].get("configs", [])]:
                problems.append(f"{where} {name}: does not start from deploy/redis.conf")
            for needed in ("masteruser ", "masterauth ", "replica-announce-ip ", "user default off"):
                if needed not in command:
                    problems.append(f"{where} {name}: the rendered configuration lacks '{needed.strip()}'")
            if name != settings["host"] and f"--replicaof {settings['host']} {settings['data_port']}" not in " ".join(
                    map(str, (override[name].get("environment") or {}).values())):
                problems.append(f"{where} {name}: a replica must start with --replicaof {settings['host']} {settings['data_port']}")
        for name in sentinels:
            targets = [c["target"] for c in override[name].get("configs", [])]
            if "sentinel-config" not in [c["source"] for c in override[name].get("configs", [])] or not any(t in " ".join(override[name]["command"]) for t in targets):
                problems.append(f"{where} {name}: does not render deploy/sentinel.conf")
        configs = {**(self.compose.get("configs") or {}), **(self.compose_sentinel.get("configs") or {})}
        if not str((configs.get("sentinel-config") or {}).get("file", "")).endswith("sentinel.conf"):
            problems.append(f"{where}: configs.sentinel-config is not ./sentinel.conf")
        secrets = {**(self.compose.get("secrets") or {}), **(self.compose_sentinel.get("secrets") or {})}
        for name, svc in override.items():
            for ref in svc.get("secrets", []):
                source = ref if isinstance(ref, str) else ref["source"]
                if source not in secrets:
                    problems.append(f"{where} {name}: secret {source} is not defined")
        api = sorted(name for name, svc in override.items() if "DEVICEAUTH_REDIS_URL" in (svc.get("environment") or {}))
        if api != sorted(self.api_services()):
            problems.append(f"{where}: overrides the Redis URL of {api}, but the API nodes of docker-compose.yml are {sorted(self.api_services())}")
        options = self.sentinel_url_options()
        for name in api:
            env = override[name]["environment"]
            for variable in env:
                if variable.startswith("DEVICEAUTH_") and variable not in self.server_env:
                    problems.append(f"{where} {name}: {variable} is not read by deviceauth-server")
            url = str(env["DEVICEAUTH_REDIS_URL"])
            match = re.match(rf"redis\+sentinel://{ACL_USER}:[^@]+@([^/?]+)/([^/?]+)(?:\?(.*))?$", url)
            if not match:
                problems.append(f"{where} {name}: DEVICEAUTH_REDIS_URL should be redis+sentinel://{ACL_USER}:…@sentinels/master: {url}")
                continue
            hosts, master, query = match.group(1).split(","), match.group(2), dict(p.split("=", 1) for p in (match.group(3) or "").split("&") if p)
            if sorted(h.split(":")[0] for h in hosts) != sentinels:
                problems.append(f"{where} {name}: the URL lists {hosts}, the sentinels are {sentinels}")
            for host in hosts:
                if ":" in host and int(host.split(":")[1]) != settings["port"]:
                    problems.append(f"{where} {name}: sentinel {host}, but sentinel.conf listens on {settings['port']}")
            if master != settings["master"]:
                problems.append(f"{where} {name}: master name {master!r}, sentinel.conf monitors {settings['master']!r}")
            for option in sorted(set(query) - options):
                problems.append(f"{where} {name}: URL option {option!r} is not read by the Redis client (it knows {sorted(options)})")
            mounted = [s if isinstance(s, str) else s.get("target", s["source"])
                       for s in (base.get(name, {}).get("secrets", []) + override[name].get("secrets", []))]
            for option in ("sentinel_password_file", "function_loader_password_file"):
                path = query.get(option)
                if not path:
                    problems.append(f"{where} {name}: the URL lacks {option}")
                elif not any(path in (f"/run/secrets/{s}", s) for s in mounted):
                    problems.append(f"{where} {name}: {option}={path} is not a mounted secret ({mounted})")
            if query.get("function_loader_user") != LOADER_USER:
                problems.append(f"{where} {name}: the URL should name the function loader {LOADER_USER}")
        return problems


    # ---------------------------------------------------------------- Redis ACL

    def acl_rule(self, user=ACL_USER):
        lines = [l for l in self.redis_conf.splitlines() if re.match(rf"^user\s+{re.escape(user)}\s", l)]
        return lines[0].split()[2:] if len(lines) == 1 else None

    def commands_sent(self):
        """{command or command|subcommand: [where]} the product sends, from the sources."""
        found = {}
        def add(name, sub, where):
            name = name.lower()
            if name == "sentinel":
                return  # sent to the redis-sentinel processes (their own ACL), never to a data node
            if name == "waitaof":
                # Only with "durability": {"append_only_file": true}, on Redis >= 7.2 / Valkey >= 8, whose
                # ACL then needs +waitaof (redis.conf says so); the Redis 7.0 this file is checked on has no
                # such command, and an ACL naming it would not load.
                return
            key = f"{name}|{sub.lower()}" if sub and name in CONTAINER_COMMANDS else name
            found.setdefault(key, []).append(where)
        dirs = ["RedisClient", "DeviceAuthorization", "DeviceAuthorizationHTTP", "deviceauth-server"]
        for d in dirs:
            for path in sorted((self.root / "Sources" / d).rglob("*.swift")):
                if path.name == "CommandKeys.swift":
                    continue  # a table of where each command's keys are (for cluster routing); it sends nothing
                text = code_lines(read(path))
                rel = path.relative_to(self.root)
                for m in re.finditer(r"redis\.p?call\(\s*['\"]([A-Za-z]+)['\"]", text):
                    add(m.group(1), None, f"{rel} (Lua)")
                for m in re.finditer(r'(?:\.send|RedisCommand)\(\s*"([A-Za-z]+)"(?:\s*,\s*"([A-Za-z-]+)")?', text):
                    add(m.group(1), m.group(2), str(rel))
                if d == "RedisClient":
                    # Handshake argument lists (["AUTH"], ["SELECT", db]) and the FCALL_RO/FCALL switch.
                    # EVALSHA/EVAL are sent only with script_calls=eval (Redis 6), not by a deployment.
                    for m in re.finditer(r'\[\s*"([A-Z]{3,})"\s*(?:,\s*"([A-Z]{3,})"\s*)?[,\]]', text):
                        if m.group(1) not in ("EVALSHA", "EVAL"):
                            add(m.group(1), m.group(2), str(rel))
                    for m in re.finditer(r'\?\s*"([A-Z_]{3,})"\s*:\s*"([A-Z_]{3,})"', text):
                        add(m.group(1), None, str(rel))
                        add(m.group(2), None, str(rel))
        return found

    def check_redis_conf(self):
        problems = []
        settings = {}
        for line in self.redis_conf.splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("#"):
                settings.setdefault(parts[0].lower(), " ".join(parts[1:]))
        for key, value in (("maxmemory-policy", "noeviction"), ("appendonly", "yes"), ("appendfsync", "everysec")):
            if settings.get(key) != value:
                problems.append(f"deploy/redis.conf: {key} is {settings.get(key)!r}, expected {value!r}")
        rule = self.acl_rule()
        if rule is None:
            return problems + [f"deploy/redis.conf: exactly one 'user {ACL_USER} …' line expected"]
        allowed, keys = set(), []
        for token in rule:
            if token in ("+@all", "allcommands", "allkeys", "~*", "&*", "allchannels") or (token.startswith("+@")):
                problems.append(f"deploy/redis.conf: the ACL grants {token}; list single commands instead")
            elif token.startswith("+"):
                allowed.add(token[1:].lower())
            elif token.startswith("-") and token != "-@all":
                allowed.discard(token[1:].lower())
            elif token.startswith("~") or token.startswith("%"):
                keys.append(token)
        if "-@all" not in rule:
            problems.append("deploy/redis.conf: the ACL should start from -@all")
        if "on" not in rule:
            problems.append("deploy/redis.conf: the ACL user is not enabled ('on')")
        if keys != [f"~{self.default_key_prefix}:*"]:
            problems.append(f"deploy/redis.conf: ACL key patterns {keys}, expected exactly ~{self.default_key_prefix}:* (the default key prefix)")
        sent = self.commands_sent()
        for command in ("eval", "evalsha", "script", "function", "function|load", "config", "config|get"):
            if command in allowed:
                problems.append(f"deploy/redis.conf: the ACL user {ACL_USER} may run {command}: it must not run Lua of its own or read the configuration")
        loader = self.acl_rule(LOADER_USER)
        if loader is None:
            problems.append(f"deploy/redis.conf: exactly one 'user {LOADER_USER} …' line expected (it loads the product's functions)")
        else:
            loader_allowed = {t[1:].lower() for t in loader if t.startswith("+")}
            if "-@all" not in loader or "resetkeys" not in loader or any(t.startswith("~") or t.startswith("%") for t in loader):
                problems.append(f"deploy/redis.conf: {LOADER_USER} should start from -@all and reach no key (resetkeys)")
            for command in sorted(LOADER_COMMANDS - loader_allowed):
                problems.append(f"deploy/redis.conf: {LOADER_USER} lacks +{command}")
            for command in sorted(loader_allowed - LOADER_COMMANDS - {"auth", "select"}):
                problems.append(f"deploy/redis.conf: {LOADER_USER} allows +{command}, which it never needs")
        sent = {command: where for command, where in sent.items() if command not in LOADER_COMMANDS}
        for command in sorted(set(sent) - allowed):
            if command.split("|")[0] in allowed:
                continue
            problems.append(f"deploy/redis.conf: the ACL lacks +{command}, which the product sends ({sent[command][0]})")
        for command in sorted(allowed - set(sent)):
            problems.append(f"deploy/redis.conf: the ACL allows +{command}, which the product never sends")
        return problems


class RedisWithConf:
    """redis-server started from a copy of deploy/redis.conf on a free loopback port in a temp dir."""

    def __init__(self, conf_text, password="acl-check-password", substitute=True, extra=()):
        """`extra`: more redis-server arguments (the file in `dir` is the one CONFIG REWRITE rewrites)."""
        self.dir = Path(tempfile.mkdtemp(prefix="deviceauth-deploy-check."))
        self.port = free_port()
        self.password = password
        text = re.sub(r"(?m)^port \d+", f"port {self.port}", conf_text)
        text = re.sub(r"(?m)^bind .*", "bind 127.0.0.1", text)
        if substitute:
            text = text.replace(">change-me", f">{password}")
        (self.dir / "redis.conf").write_text(text)
        # An admin user of the check's own (the file may switch the default user off).
        self.process = subprocess.Popen(
            ["redis-server", str(self.dir / "redis.conf"), "--dir", str(self.dir), "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log"), "--appendonly", "no", "--save", "",
             "--user", "deploycheck", "on", ">deploycheck", "~*", "&*", "+@all", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server refused deploy/redis.conf: {self.log()}")
            try:
                if self.cli("PING") == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {self.log()}")

    def log(self):
        try:
            return (self.dir / "redis.log").read_text()[-2000:]
        except OSError:
            return "(no log)"

    def cli(self, *args, user="deploycheck", password="deploycheck"):
        login = ["--user", user, "--pass", password, "--no-auth-warning"] if user else []
        out = subprocess.run(["redis-cli", "-p", str(self.port), *login, *args],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()

    @property
    def url(self):
        # The application user, with the function loader user for FUNCTION LOAD (as deploy/ configures it).
        return (f"redis://{ACL_USER}:{self.password}@127.0.0.1:{self.port}/0"
                f"?function_loader_user={LOADER_USER}&function_loader_password={self.password}-loader")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def dryrun_arguments(command, key):
    """Plausible arguments for ACL DRYRUN (arity is checked); keys in the product's key space."""
    name, _, sub = command.partition("|")
    table = {
        "auth": [ACL_USER, "x"], "select": ["0"], "ping": [], "time": [],
        "fcall": ["f" + "0" * 40, "1", key], "fcall_ro": ["f" + "0" * 40, "1", key], "info": ["memory"],
        "get": [key], "set": [key, "v", "NX", "PX", "1000"], "exists": [key], "incr": [key],
        "pttl": [key], "pexpire": [key, "1000"], "pexpireat": [key, "1000"],
        "hmget": [key, "s"], "hset": [key, "s", "p"], "hincrby": [key, "rp", "1"], "asking": [], "role": [], "wait": ["1", "500"],
    }
    if name == "config" and sub == "get":
        return ["CONFIG", "GET", "maxmemory-policy"]
    if name == "cluster" and sub == "slots":
        return ["CLUSTER", "SLOTS"]
    if sub:
        return [name.upper(), sub.upper(), key]
    return [name.upper(), *table.get(name, [key])]


# ====================================================================== tests

DEPLOY = None


def deploy():
    global DEPLOY
    if DEPLOY is None:
        DEPLOY = Deploy(REPO)
    return DEPLOY


class StaticChecks(unittest.TestCase):
    def test_yaml_parses(self):
        d = deploy()
        self.assertIn("services", d.compose)
        kinds = sorted(kind for kind, _ in d.k8s)
        for kind in ("ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "Service"):
            self.assertIn(kind, kinds)

    def test_env_names_exist_in_the_server(self):
        self.assertEqual(deploy().check_env_names(), [])

    def test_ports_and_probe_paths(self):
        self.assertEqual(deploy().check_ports(), [])

    def test_names_images_selectors_mounts(self):
        self.assertEqual(deploy().check_names(), [])

    def test_server_configs(self):
        self.assertEqual(deploy().check_configs(), [])

    def test_redis_conf_and_acl_text(self):
        self.assertEqual(deploy().check_redis_conf(), [])

    def test_sentinel_override(self):
        self.assertEqual(deploy().check_sentinel(), [])


class NginxCheck(unittest.TestCase):
    def test_nginx_t(self):
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        self.assertIsNotNone(nginx, "nginx is not installed (apt-get install nginx)")
        problems = nginx_t(nginx, deploy().nginx)
        self.assertEqual(problems, [])


class NginxLive(unittest.TestCase):
    """deploy/nginx.conf running, in front of a stub node that answers every path with 200 and a
    marker: the metrics paths, however spelled, are answered by nginx (404) and never reach a node."""

    METRICS_SPELLINGS = ["/metrics", "/metrics/", "/metrics//", "//metrics", "///metrics/", "/metrics/x",
                         "/%6Detrics", "/metrics%2F", "/./metrics", "/device/../metrics", "/metrics?x=1"]

    def test_metrics_are_not_served_through_nginx(self):
        import http.server
        import threading
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        self.assertIsNotNone(nginx, "nginx is not installed (apt-get install nginx)")
        seen = []

        class Stub(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.path)
                body = b"STUB-NODE deviceauth_grants_issued_total 1\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
        threading.Thread(target=stub.serve_forever, daemon=True).start()
        listen = free_port()
        with tempfile.TemporaryDirectory(prefix="deviceauth-deploy-nginx-live.") as tmp:
            tmp = Path(tmp)
            conf = re.sub(r"(?m)^(\s*server\s+)[\w.-]+:(\d+)", rf"\g<1>127.0.0.1:{stub.server_port}", deploy().nginx)
            conf = re.sub(r"(?m)^(\s*listen\s+)\d+;", rf"\g<1>127.0.0.1:{listen};", conf)
            (tmp / "default.conf").write_text(conf)
            (tmp / "nginx.conf").write_text(f"""
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    include {tmp}/default.conf;
}}
""")
            process = subprocess.Popen([nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                def get(path):
                    with socket.create_connection(("127.0.0.1", listen), timeout=10) as connection:
                        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
                        data = b""
                        while chunk := connection.recv(65536):
                            data += chunk
                    head, _, body = data.partition(b"\r\n\r\n")
                    return int(head.split()[1]), body
                for _ in range(100):  # hang guard while nginx starts
                    try:
                        get("/healthz")
                        break
                    except OSError:
                        time.sleep(0.1)
                status, body = get("/healthz")
                self.assertEqual((status, b"STUB-NODE" in body), (200, True), "nginx does not proxy /healthz to the node")
                before = len(seen)
                for path in self.METRICS_SPELLINGS:
                    status, body = get(path)
                    self.assertEqual(status, 404, f"GET {path} through nginx")
                    self.assertNotIn(b"deviceauth_", body, f"GET {path} through nginx leaked a node's answer")
                self.assertEqual(seen[before:], [], "metrics requests reached the node")
            finally:
                process.terminate()
                process.wait(timeout=10)
                stub.shutdown()
                stub.server_close()


def nginx_t(nginx, conf_text):
    with tempfile.TemporaryDirectory(prefix="deviceauth-deploy-nginx.") as tmp:
        tmp = Path(tmp)
        # nginx resolves upstream host names while loading; api-N exist only on the compose network.
        (tmp / "default.conf").write_text(re.sub(r"(?m)^(\s*server\s+)[\w.-]+:(\d+)", r"\g<1>127.0.0.1:\2", conf_text))
        (tmp / "nginx.conf").write_text(f"""
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    include {tmp}/default.conf;
}}
""")
        out = subprocess.run([nginx, "-t", "-q", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")],
                             capture_output=True, text=True, timeout=30)
        return [] if out.returncode == 0 else [f"nginx -t: {out.stderr.strip()}"]


class RedisACLLive(unittest.TestCase):
    """deploy/redis.conf on a real redis-server: the file loads and the ACL admits what the product sends."""

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisWithConf(deploy().redis_conf)

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()

    def test_file_loads_with_expected_settings(self):
        self.assertEqual(self.redis.cli("CONFIG", "GET", "maxmemory-policy").split()[-1], "noeviction")
        self.assertEqual(self.redis.cli("CONFIG", "GET", "appendfsync").split()[-1], "everysec")

    def test_acl_admits_every_command_the_product_sends(self):
        key = f"{deploy().default_key_prefix}:{{00ab}}:d:0123456789abcdef01234567"
        refused = []
        for command in sorted(deploy().commands_sent()):
            user = LOADER_USER if command in LOADER_COMMANDS else ACL_USER
            arguments = ["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() return 1 end)"] if command == "function|load" \
                else dryrun_arguments(command, key)
            answer = self.redis.cli("ACL", "DRYRUN", user, *arguments)
            if answer != "OK":
                refused.append(f"{command}: {answer}")
        self.assertEqual(refused, [])

    def test_acl_refuses_the_rest(self):
        for args in (["FLUSHALL"], ["KEYS", "*"], ["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"], ["DEBUG", "SLEEP", "0"],
                     ["SCRIPT", "FLUSH"], ["GET", "other:key"], ["EVAL", "return 1", "1", "other:key"], ["SHUTDOWN"],
                     ["EVAL", "return 1", "1", f"{deploy().default_key_prefix}:x"], ["EVALSHA", "0" * 40, "0"], ["SCRIPT", "LOAD", "return 1"],
                     ["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() return 1 end)"], ["FUNCTION", "FLUSH"],
                     ["FUNCTION", "DELETE", "x"], ["CONFIG", "GET", "maxmemory-policy"]):
            answer = self.redis.cli("ACL", "DRYRUN", ACL_USER, *args)
            self.assertNotEqual(answer, "OK", f"{ACL_USER} may run {' '.join(args)}")

    def test_function_loader_user_can_only_load(self):
        for args in (["GET", f"{deploy().default_key_prefix}:x"], ["SET", "x", "1"], ["FCALL", "x", "0"], ["FLUSHALL"],
                     ["EVAL", "return 1", "0"], ["FUNCTION", "FLUSH"], ["FUNCTION", "DELETE", "x"], ["CONFIG", "GET", "*"]):
            answer = self.redis.cli("ACL", "DRYRUN", LOADER_USER, *args)
            self.assertNotEqual(answer, "OK", f"{LOADER_USER} may run {' '.join(args)}")

    def test_product_runs_as_the_acl_user(self):
        """One API node on this Redis as the ACL user, and a short load test through it."""
        build = Path(os.environ.get("DEPLOY_CHECK_BUILD_DIR", REPO / ".build/debug"))
        server, loadtest = build / "deviceauth-server", build / "deviceauth-loadtest"
        if not (server.exists() and loadtest.exists()):
            message = f"{build}/deviceauth-server or deviceauth-loadtest missing (run make build); the ACL was only checked with ACL DRYRUN"
            if os.environ.get("DEPLOY_CHECK_REQUIRE_LIVE") == "1":
                self.fail(message)
            self.skipTest(message)
        tmp = self.redis.dir
        config = json.loads(read(REPO / "deploy/loadtest-config.json"))
        config.pop("key_prefix", None)  # the default prefix, the one the ACL allows
        config.pop("secret", None)
        # All simulated devices share one address: lift per-address request limits where the server has them.
        if "rate_limits" in deploy().nested_config_keys and "rate_limits" not in config:
            config["rate_limits"] = {key: 0 for key in sorted(deploy().nested_config_keys["rate_limits"])}
        (tmp / "config.json").write_text(json.dumps(config))
        key = tmp / "signing-key.pem"
        subprocess.run(f"openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out {key}",
                       shell=True, check=True, capture_output=True)
        port = free_port()
        env = dict(os.environ, DEVICEAUTH_SECRET="deploy-check-secret-of-at-least-32-bytes!!")
        log = open(tmp / "node.log", "w")
        node = subprocess.Popen([str(server), "--host", "127.0.0.1", "--port", str(port), "--redis-url", self.redis.url,
                                 "--config", str(tmp / "config.json"), "--signing-key", str(key), "--log-level", "info"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            ready = False
            for _ in range(150):
                if node.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                        ready = response.status == 200
                        break
                except OSError:
                    time.sleep(0.1)
            self.assertTrue(ready, f"the node did not become ready as the ACL user: {read(tmp / 'node.log')[-2000:]}")
            run = subprocess.run([str(loadtest), "http", "--nodes", f"http://127.0.0.1:{port}", "--devices", "40", "--concurrency", "20",
                                  "--mix", "approve=60,deny=40", "--think-time-ms", "20-80", "--seed", "3", "--request-timeout", "10"],
                                 capture_output=True, text=True, timeout=90)
            self.assertEqual(run.returncode, 0, f"load test as the ACL user failed:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")
        finally:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
            log.close()
        node_log = read(tmp / "node.log")
        self.assertNotRegex(node_log, r"NOPERM|no permissions|maxmemory-policy", "the node logged an ACL problem")
        # The user really did the work: its keys exist under the default prefix.
        self.assertNotEqual(self.redis.cli("DBSIZE"), "0")


class ComposeRedisCommand(unittest.TestCase):
    """The compose Redis service rewrites redis.conf at start-up; run that rewrite and load the result."""

    def test_rendered_config_loads_and_locks_down_the_default_user(self):
        command = deploy().compose["services"]["redis"]["command"]
        self.assertEqual(command[:2], ["sh", "-c"])
        script = command[2].replace("$$", "$")  # compose's escaping of a literal $
        render, sep, start = script.partition("&& exec ")
        self.assertTrue(sep and start.startswith("redis-server /tmp/redis.conf"), f"unexpected command: {script}")
        with tempfile.TemporaryDirectory(prefix="deviceauth-deploy-compose.") as tmp:
            shutil.copy(REPO / "deploy/redis.conf", Path(tmp) / "in.conf")
            render = render.replace("/etc/deviceauth/redis.conf", f"{tmp}/in.conf").replace("/tmp/redis.conf", f"{tmp}/out.conf")
            (Path(tmp) / "loader").write_text("fedcba9876543210fedcba9876543210\n")
            render = render.replace("/run/secrets/redis-loader-password", f"{tmp}/loader")
            password = "0123456789abcdef0123456789abcdef"
            subprocess.run(["sh", "-c", render], env=dict(os.environ, REDIS_PASSWORD=password), check=True, timeout=10)
            rendered = read(Path(tmp) / "out.conf")
        self.assertNotIn("change-me", rendered)
        self.assertNotIn(password, rendered, "the plaintext password must not be written to the file")
        self.assertNotIn("fedcba9876543210fedcba9876543210", rendered, "the loader's plaintext password must not be written either")
        redis = RedisWithConf(rendered, substitute=False)
        try:
            self.assertEqual(redis.cli("PING", user=ACL_USER, password=password), "PONG")
            library = "#!lua name=composecheck\nredis.register_function('composecheck', function() return 1 end)"
            self.assertEqual(redis.cli("FUNCTION", "LOAD", library, user=LOADER_USER, password="fedcba9876543210fedcba9876543210"), "composecheck",
                             "the loader user logs in with the password file's content (without its newline) and may load functions")
            self.assertNotEqual(redis.cli("PING", user=None), "PONG", "the default user must be off")
        finally:
            redis.stop()


class SentinelLive(unittest.TestCase):
    """docker-compose.sentinel.yml's data nodes and sentinels on loopback: the compose commands render
    deploy/redis.conf and deploy/sentinel.conf (as in the containers, secrets from files), then a
    primary and two replicas run on redis-server and three sentinels on redis-sentinel from the
    rendered files. They must replicate as deviceauth-replication, the sentinels must see the
    primary, both replicas and each other as deviceauth-sentinel (CKQUORUM), an API node must serve
    through the override's redis+sentinel:// URL, and SENTINEL FAILOVER must promote a replica
    (the sentinel user may SLAVEOF and CONFIG REWRITE) that the node then writes to."""

    SECRETS = {"redis-loader-password": "0123456789abcdef0123456789abcdef", "redis-replication-password": "1111222233334444aaaabbbbccccdddd",
               "redis-sentinel-auth-password": "5555666677778888eeeeffff00001111", "redis-sentinel-password": "9999000011112222333344445555aaaa"}
    PASSWORD = "abcdefabcdef0123456789abcdefabcd"

    def render(self, service, tmp, output, env):
        """Runs the render part of a compose service's command (everything before its exec) in `tmp`."""
        script = deploy().compose_sentinel["services"][service]["command"][2].replace("$$", "$")
        render, sep, _ = script.rpartition("&& exec ")
        self.assertTrue(sep, f"{service}: no exec in {script}")
        for name in self.SECRETS:
            render = render.replace(f"/run/secrets/{name}", f"{tmp}/{name}")
        render = (render.replace("/etc/deviceauth/redis.conf", f"{REPO}/deploy/redis.conf").replace("/tmp/redis.conf", str(output))
                  .replace("/etc/deviceauth/sentinel.conf", f"{REPO}/deploy/sentinel.conf").replace("/data/sentinel.conf", str(output)))
        subprocess.run(["sh", "-c", render], env=dict(os.environ, REDIS_PASSWORD=self.PASSWORD, **env), check=True, timeout=10)
        text = read(output)
        for secret in [self.PASSWORD, self.SECRETS["redis-loader-password"], self.SECRETS["redis-sentinel-auth-password"]]:
            if "sentinel" not in service:
                self.assertNotIn(secret, text, f"{service}: a plaintext password in the rendered redis.conf")
        self.assertEqual(os.stat(output).st_mode & 0o077, 0, f"{service}: the rendered file is readable by others")
        return text

    def sentinel_cli(self, port, *args):
        out = subprocess.run(["redis-cli", "-p", str(port), "--no-auth-warning", "-a", self.SECRETS["redis-sentinel-password"], "--raw", *args],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def test_compose_sentinel_topology_replicates_and_fails_over(self):
        if not shutil.which("redis-sentinel"):
            self.fail("redis-sentinel is not installed (apt-get install redis-sentinel)")
        compose = deploy().compose_sentinel["services"]
        settings = deploy().sentinel_settings()
        master = settings["master"]
        # On tmpfs when there is one: a sentinel fsyncs its file at each epoch and vote, and an fsync held
        # 2 s by a busy disk looks like a clock jump to it (TILT mode: no failover for 30 s).
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        tmp = Path(tempfile.mkdtemp(prefix="deviceauth-deploy-sentinel.", dir=shm))
        processes, data = [], []
        try:
            for name, value in self.SECRETS.items():
                (tmp / name).write_text(value + "\n")
            # The data nodes: primary first (the host sentinel.conf monitors), then the replicas.
            names = [settings["host"]] + sorted(n for n, s in compose.items() if "exec redis-server " in " ".join(s.get("command", [])) and n != settings["host"])
            for name in names:
                env = {k: str(v) for k, v in (compose[name].get("environment") or {}).items() if k in ("ANNOUNCE_HOSTNAME",)}
                env["ANNOUNCE_HOSTNAME"] = "127.0.0.1"   # the service names resolve only inside the compose network
                rendered = self.render(name, tmp, tmp / f"{name}.conf", env)
                replica_of = str((compose[name].get("environment") or {}).get("REPLICA_OF", "")).split()
                if replica_of:
                    self.assertEqual(replica_of[:3], ["--replicaof", settings["host"], str(settings["data_port"])])
                    replica_of = ["--replicaof", "127.0.0.1", str(data[0].port)]
                data.append(RedisWithConf(rendered, substitute=False, extra=replica_of))
            primary, replicas = data[0], data[1:]
            # The sentinels, from the rendered sentinel.conf on free ports, monitoring the primary.
            sentinel_ports = []
            sentinel_names = sorted(n for n, s in compose.items() if "exec redis-sentinel " in " ".join(s.get("command", [])))
            for name in sentinel_names:
                port = free_port()
                conf = tmp / f"{name}.conf"
                text = self.render(name, tmp, conf, {})
                self.assertNotIn("change-me", "\n".join(l for l in text.splitlines() if not l.startswith("#")), f"{name}: a placeholder left")
                text = re.sub(r"(?m)^port \d+", f"port {port}", text)
                text = re.sub(rf"(?m)^sentinel monitor {master} \S+ \d+", f"sentinel monitor {master} 127.0.0.1 {primary.port}", text)
                conf.write_text(text + f"bind 127.0.0.1\ndir {tmp}\nlogfile {tmp}/{name}.log\n")
                processes.append(subprocess.Popen(["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp))
                sentinel_ports.append(port)

            def settled():
                for port in sentinel_ports:
                    if self.sentinel_cli(port, "sentinel", "ckquorum", master).split(" ")[0] != "OK":
                        return False
                    lines = self.sentinel_cli(port, "sentinel", "replicas", master).splitlines()
                    linked = sum(1 for i in range(len(lines) - 1) if lines[i] == "master-link-status" and lines[i + 1] == "ok")
                    if linked != len(replicas) or self.sentinel_cli(port, "sentinel", "sentinels", master).splitlines().count("runid") != len(sentinel_ports) - 1:
                        return False
                return True
            deadline = time.time() + 40   # hang guard: sentinels say hello every 2 s
            while time.time() < deadline and not settled():
                time.sleep(0.2)
            logs = "".join(read(p)[-800:] for p in tmp.glob("sentinel-*.log"))
            self.assertTrue(settled(), f"the sentinels did not see the primary, {len(replicas)} linked replicas and each other:\n{logs}")
            for replica in replicas:
                self.assertIn("master_link_status:up", replica.cli("INFO", "replication"), "a replica did not sync as deviceauth-replication")

            build = Path(os.environ.get("DEPLOY_CHECK_BUILD_DIR", REPO / ".build/debug"))
            server = build / "deviceauth-server"
            if not server.exists():
                message = f"{server} missing (run make build); the API node was not run through the Sentinel URL"
                if os.environ.get("DEPLOY_CHECK_REQUIRE_LIVE") == "1":
                    self.fail(message)
                self.skipTest(message)
            # The API node with the override's URL: sentinel-N:26379 → the loopback sentinels, files → tmp.
            url = str(compose[sorted(deploy().api_services())[0]]["environment"]["DEVICEAUTH_REDIS_URL"])
            url = url.replace("${REDIS_PASSWORD:?set REDIS_PASSWORD in deploy/.env}", self.PASSWORD)
            hosts = re.match(r"redis\+sentinel://[^@]+@([^/]+)/", url).group(1)
            url = url.replace(hosts, ",".join(f"127.0.0.1:{port}" for port in sentinel_ports))
            for name in self.SECRETS:
                url = url.replace(f"/run/secrets/{name}", f"{tmp}/{name}")
            self.assertNotIn("${", url)
            config = json.loads(read(REPO / "deploy/loadtest-config.json"))
            config.pop("key_prefix", None)
            config.pop("secret", None)
            (tmp / "config.json").write_text(json.dumps(config))
            key = tmp / "signing-key.pem"
            subprocess.run(f"openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out {key}",
                           shell=True, check=True, capture_output=True)
            node_port = free_port()
            log = open(tmp / "node.log", "w")
            node = subprocess.Popen([str(server), "--host", "127.0.0.1", "--port", str(node_port), "--redis-url", url,
                                     "--config", str(tmp / "config.json"), "--signing-key", str(key), "--log-level", "notice"],
                                    stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, DEVICEAUTH_SECRET="deploy-check-secret-of-at-least-32-bytes!!"))
            processes.append(node)

            def answer(path, form=None):
                try:
                    data_bytes = urllib.parse.urlencode(form).encode() if form else None
                    with urllib.request.urlopen(f"http://127.0.0.1:{node_port}{path}", data=data_bytes, timeout=5) as response:
                        return response.status
                except urllib.error.HTTPError as error:
                    return error.code
                except OSError:
                    return 0

            def wait_for(predicate, seconds):
                deadline = time.time() + seconds   # hang guard only
                while time.time() < deadline and not predicate():
                    time.sleep(0.2)
                return predicate()
            self.assertTrue(wait_for(lambda: answer("/readyz") == 200, 30), f"the node is not ready through the Sentinel URL: {read(tmp / 'node.log')[-2000:]}")
            self.assertEqual(answer("/oauth/device_authorization", {"client_id": "loadtest"}), 200)
            before = int(primary.cli("DBSIZE"))
            self.assertGreater(before, 0, "the node did not write to the primary")

            # A failover ordered by a sentinel: it needs SLAVEOF, CONFIG REWRITE… from the sentinel user.
            self.assertEqual(self.sentinel_cli(sentinel_ports[0], "sentinel", "failover", master), "OK")
            ports = {str(r.port): r for r in replicas}
            self.assertTrue(wait_for(lambda: all(self.sentinel_cli(p, "sentinel", "get-master-addr-by-name", master).splitlines()[-1:] != [str(primary.port)]
                                                 for p in sentinel_ports), 40), "the sentinels did not switch to a replica")
            new = ports.get(self.sentinel_cli(sentinel_ports[0], "sentinel", "get-master-addr-by-name", master).splitlines()[-1])
            self.assertIsNotNone(new, "the sentinels name a primary that is not one of the replicas")
            self.assertTrue(wait_for(lambda: new.cli("ROLE").splitlines()[:1] == ["master"], 20), "the promoted replica is not a primary")
            self.assertTrue(wait_for(lambda: primary.cli("ROLE").splitlines()[:1] == ["slave"], 30),
                            "the old primary was not turned into a replica (the sentinel user needs SLAVEOF and CONFIG REWRITE)")
            self.assertIn("replicaof 127.0.0.1", read(primary.dir / "redis.conf"), "CONFIG REWRITE did not record the new role")
            # The node follows: new grants are written to the promoted replica.
            written = int(new.cli("DBSIZE"))
            self.assertTrue(wait_for(lambda: answer("/oauth/device_authorization", {"client_id": "loadtest"}) == 200, 30),
                            f"the node does not issue codes after the failover: {read(tmp / 'node.log')[-2000:]}")
            self.assertGreater(int(new.cli("DBSIZE")), written, "the node did not write to the promoted replica")
            self.assertNotRegex(read(tmp / "node.log"), r"NOPERM|no permissions", "the node logged an ACL problem")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for redis in data:
                redis.stop()
            if "log" in locals():
                log.close()
            shutil.rmtree(tmp, ignore_errors=True)


class MutationTests(unittest.TestCase):
    """Break one thing in a copy of the tree and expect the checks to notice: they can fail."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="deviceauth-deploy-mutation."))
        shutil.copytree(REPO / "deploy", self.tmp / "deploy")
        shutil.copytree(REPO / "Sources", self.tmp / "Sources", ignore=shutil.ignore_patterns("*.mustache"))
        shutil.copy(REPO / "Package.swift", self.tmp / "Package.swift")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mutate(self, relative, old, new):
        path = self.tmp / relative
        text = read(path)
        self.assertIn(old, text, f"mutation target {old!r} not found in {relative}")
        path.write_text(text.replace(old, new, 1))

    def problems(self, check):
        return getattr(Deploy(self.tmp), check)()

    def test_unmodified_copy_passes(self):
        d = Deploy(self.tmp)
        self.assertEqual(d.check_env_names() + d.check_ports() + d.check_names() + d.check_configs() + d.check_redis_conf() + d.check_sentinel(), [])

    def test_misspelt_env_var(self):
        self.mutate("deploy/k8s/deployment.yaml", "name: DEVICEAUTH_SIGNING_KEY", "name: DEVICEAUTH_SIGNINGKEY")
        self.assertTrue(any("DEVICEAUTH_SIGNINGKEY" in p for p in self.problems("check_env_names")))

    def test_wrong_readiness_path(self):
        self.mutate("deploy/k8s/deployment.yaml", "path: /readyz", "path: /ready")
        self.assertTrue(any("readinessProbe path /ready" in p for p in self.problems("check_ports")))

    def test_probe_on_the_wrong_route(self):
        self.mutate("deploy/k8s/deployment.yaml", "path: /healthz", "path: /readyz")
        self.assertTrue(any("livenessProbe should use /healthz" in p for p in self.problems("check_ports")))

    def test_nginx_upstream_port(self):
        self.mutate("deploy/nginx.conf", "server api-2:8080", "server api-2:8081")
        self.assertTrue(any("api-2:8081" in p for p in self.problems("check_ports")))

    def test_dockerfile_expose(self):
        self.mutate("deploy/Dockerfile", "EXPOSE 8080", "EXPOSE 9090")
        self.assertTrue(any("EXPOSE [9090]" in p for p in self.problems("check_ports")))

    def test_route_renamed_in_the_server(self):
        self.mutate("Sources/DeviceAuthorizationHTTP/OpenAPI/openapi.json", '"/healthz": {', '"/livez": {')
        problems = self.problems("check_ports")
        self.assertTrue(any("/healthz is not a" in p for p in problems), problems)

    def test_unknown_config_key(self):
        self.mutate("deploy/k8s/configmap.yaml", '"user_header"', '"user_headers"')
        self.assertTrue(any("unknown key 'user_headers'" in p for p in self.problems("check_configs")))

    def test_loadtest_option_that_does_not_exist(self):
        self.mutate("deploy/docker-compose.yml", '"--concurrency"', '"--parallel"')
        self.assertTrue(any("--parallel is not an option" in p for p in self.problems("check_names")))

    def test_secret_key_missing(self):
        self.mutate("deploy/k8s/secret.yaml", "redis-url:", "redis_url:")
        self.assertTrue(any("no key redis-url" in p for p in self.problems("check_names")))

    def test_acl_missing_a_script_command(self):
        self.mutate("deploy/redis.conf", " +hincrby", "")
        self.assertTrue(any("lacks +hincrby" in p for p in self.problems("check_redis_conf")))

    def test_new_command_in_a_script(self):
        self.mutate("Sources/DeviceAuthorization/Scripts/StoreScripts.swift", "redis.call('HINCRBY'", "redis.call('HDEL', KEYS[1], 'x') redis.call('HINCRBY'")
        self.assertTrue(any("lacks +hdel" in p for p in self.problems("check_redis_conf")))

    def test_acl_too_wide(self):
        self.mutate("deploy/redis.conf", "-@all +auth", "+@all +auth")
        self.assertTrue(any("grants +@all" in p for p in self.problems("check_redis_conf")))

    def test_sentinel_url_names_another_master(self):
        self.mutate("deploy/docker-compose.sentinel.yml", ":26379/deviceauth?", ":26379/mymaster?")
        self.assertTrue(any("master name 'mymaster'" in p for p in self.problems("check_sentinel")))

    def test_sentinel_listens_elsewhere(self):
        self.mutate("deploy/sentinel.conf", "port 26379", "port 26380")
        self.assertTrue(any("sentinel.conf listens on 26380" in p for p in self.problems("check_sentinel")))

    def test_sentinel_url_option_the_client_does_not_read(self):
        self.mutate("deploy/docker-compose.sentinel.yml", "&sentinel_password_file=", "&sentinel_pass_file=")
        problems = self.problems("check_sentinel")
        self.assertTrue(any("'sentinel_pass_file' is not read" in p for p in problems), problems)

    def test_sentinel_replica_without_replicaof(self):
        self.mutate("deploy/docker-compose.sentinel.yml", 'REPLICA_OF: "--replicaof redis 6379"', 'REPLICA_OF: ""')
        self.assertTrue(any("must start with --replicaof" in p for p in self.problems("check_sentinel")))

    def test_nginx_syntax_error_fails_nginx_t(self):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            self.skipTest("nginx missing (NginxCheck fails for that already)")
        broken = deploy().nginx.replace("proxy_pass http://deviceauth;", "proxy_pass http://nowhere;", 1)
        self.assertNotEqual(nginx_t(nginx, broken), [])

    def test_acl_on_a_real_server_refuses_a_missing_command(self):
        redis = RedisWithConf(deploy().redis_conf.replace(" +hset", ""))
        try:
            key = "da:{00ab}:d:0"
            self.assertNotEqual(redis.cli("ACL", "DRYRUN", ACL_USER, *dryrun_arguments("hset", key)), "OK")
        finally:
            redis.stop()


if __name__ == "__main__":
    unittest.main()
