"""The worker image, built from docker/Dockerfile and run for real against the local stack.

Built with buildah from a local debootstrap stand-in for the Dockerfile's base
image (no registry is reachable here), run with `buildah run --isolation
chroot` (it shares the host's network, so 127.0.0.1 reaches the stack).
Skipped only where buildah is not installed.
"""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deployment import tools
from tests.deployment.image_worker import DATA_DIR, ImageWorker, ids
from tests.integration.conftest import wait_until
from tests.metric_names import exposed_metric_names, referenced_metric_names
from tests.worker_process import free_port

pytestmark = pytest.mark.integration

APP_UID = 10001
SIZE_TARGET_MB = 250
OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses", "base.name")


@pytest.fixture
def mounted(image):
    """The image's root filesystem, read from the host (a working container, mounted)."""
    name = f"tp-inspect-{random.randrange(1 << 30):x}"
    tools.buildah("from", "--pull=never", "--name", name, image)
    try:
        yield Path(tools.buildah("mount", name).stdout.strip())
    finally:
        tools.buildah("rm", name, check=False)


PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def certificates(path: Path) -> set[bytes]:
    """The PEM certificates in a file, whitespace removed."""
    try:
        data = path.read_bytes()
    except OSError:
        return set()
    return {b"".join(body.split()) for body in PEM.findall(data)}


def healthcheck(image: str, port: int) -> int:
    """Run the image's own HEALTHCHECK command in a container of the image; its exit code."""
    test = tools.image_config(image)["Docker"]["config"]["Healthcheck"]["Test"]
    assert test[0] == "CMD", f"HEALTHCHECK should be exec form: {test}"
    name = f"tp-health-{random.randrange(1 << 30):x}"
    tools.buildah("from", "--pull=never", "--name", name, image)
    try:
        tools.buildah("config", "--env", f"WEB_PORT={port}", name)
        return tools.buildah("run", "--isolation", "chroot", name, "--", *test[1:], check=False, timeout=30).returncode
    finally:
        tools.buildah("rm", name, check=False)


def test_image_size_user_entrypoint_healthcheck_and_labels(image):
    size = tools.image_size_mb(image)
    assert size <= SIZE_TARGET_MB, f"image is {size:.0f} MB, over the {SIZE_TARGET_MB} MB target"

    config = tools.image_config(image)["Docker"]["config"]
    assert config["User"] == f"{APP_UID}:{APP_UID}", "runs as a fixed, numeric non-root UID:GID"
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"], "tini is the init: SIGTERM reaches the worker"
    assert config["Entrypoint"][2:] == ["/opt/venv/bin/faust", "-A", "app.main", "worker"]
    assert "6066/tcp" in config["ExposedPorts"]
    assert DATA_DIR in config["Volumes"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["WEB_PORT"] == "6066" and env["WORKER_DATA_DIR"].startswith(DATA_DIR + "/")
    assert not {"PIP_CERT", "DATABASE_URL", "API_KEYS"} & env.keys(), "no build-time or secret settings baked in"

    health = config["Healthcheck"]
    assert any("/health/live" in part for part in health["Test"]), health
    assert health["Timeout"] <= health["Interval"] and health["Retries"] >= 1

    labels = config["Labels"]
    for name in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{name}"), f"label org.opencontainers.image.{name} missing"
    pyproject = tomllib.loads((tools.ROOT / "pyproject.toml").read_text())
    assert labels["org.opencontainers.image.version"] == pyproject["project"]["version"]
    head = tools.run(["git", "rev-parse", "HEAD"], cwd=tools.ROOT).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == head
    assert labels["org.opencontainers.image.base.name"] == tools.BASE_IMAGE


def test_runtime_image_has_no_compiler_no_pip_and_nothing_of_this_machine(mounted):
    for tool in ("gcc", "cc", "c++", "g++", "make", "ld", "as"):
        for directory in ("usr/bin", "usr/local/bin", "opt/venv/bin"):
            assert not (mounted / directory / tool).exists(), f"/{directory}/{tool} in the runtime image"
    assert not list((mounted / "opt/venv/bin").glob("pip*")), "pip left in the runtime virtualenv"
    assert not (mounted / "run/host-ca.crt").exists()
    assert (mounted / "usr/bin/tini").exists()
    site = mounted / "opt/venv/lib/python3.11/site-packages"
    assert (site / "app" / "migrations").is_dir(), "migrations are installed with the package"
    assert not list(site.glob("pytest*")) and not list(site.glob("schemathesis*")), "test tools in the image"
    data = mounted / DATA_DIR.lstrip("/")
    assert data.is_dir() and data.stat().st_uid == APP_UID, "the data volume belongs to the worker's user"
    # Certificates this machine trusts beyond Debian's and certifi's (a
    # TLS-intercepting proxy's, given to pip as a build secret) are nowhere in the image.
    host_bundle = tools.host_ca_bundle()
    if host_bundle:
        shipped = certificates(mounted / "etc/ssl/certs/ca-certificates.crt")
        for bundle in site.glob("certifi/cacert.pem"):
            shipped |= certificates(bundle)
        machine_only = certificates(Path(host_bundle)) - shipped
        for path in [*(mounted / "etc").rglob("*"), *(mounted / "opt").rglob("*.pem"), *(mounted / "run").rglob("*")]:
            if path.is_file() and not path.is_symlink():
                assert not certificates(path) & machine_only, f"{path} holds a CA certificate of this machine"


async def test_worker_from_the_image_serves_persists_reports_and_stops_cleanly(image, namespace, http, tmp_path):
    port = free_port()
    worker = ImageWorker(
        env={
            "KAFKA_BOOTSTRAP_SERVERS": namespace.bootstrap_servers,
            "DATABASE_URL": namespace.database_url,
            "APP_ID": namespace.app_id,
            "COMMAND_TOPIC": namespace.topic,
            "WEB_PORT": str(port),
            "WEB_HOST": "127.0.0.1",
            "BATCH_MAX_WAIT_SECONDS": "0.1",
        },
        log_path=tmp_path / "image-worker.log", data_dir=tmp_path / "volume", port=port, image=image,
    ).start()
    try:
        await worker.wait_ready()

        tini, pid = worker.pids()
        assert tini and pid, "tini and the worker under it"
        for process in (tini, pid):
            uids, gids = ids(process)
            assert set(uids) == {APP_UID} and set(gids) == {APP_UID}, f"pid {process} runs as {uids}/{gids}"

        async with http.get(f"{worker.url}/health/ready") as response:
            body = await response.json()
            assert response.status == 200, body
            assert {c["status"] for c in body["checks"].values()} == {"UP"}

        async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T21:03:12+02:00") as response:
            assert response.status == 200, await response.text()
            command_id = (await response.json())["id"]

        async def stored():
            async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
                return await response.json() if response.status == 200 else None

        record = await wait_until(stored, 60, "the POSTed timestamp to be served")
        assert record["event_timestamp"] == "2009-09-28T19:03:12Z"
        assert namespace.query("SELECT count(*) FROM timestamp_records WHERE id = %s", (command_id,)) == [(1,)]

        async with http.get(f"{worker.url}/metrics") as response:
            assert response.status == 200
            exposition = await response.text()
        assert "timestamp_commands_published_total 1.0" in exposition
        missing = referenced_metric_names() - exposed_metric_names(exposition)
        assert not missing, f"metrics the rules and dashboard use but the image's worker does not expose: {missing}"

        assert healthcheck(image, port) == 0, "the image's HEALTHCHECK fails on a live worker"
        # RocksDB table state went to the volume, nothing to the image's filesystem
        # (so a read-only root filesystem works); buildah itself adds /run.
        assert any((tmp_path / "volume").rglob("*.sst")) or any((tmp_path / "volume").rglob("CURRENT")), \
            "no RocksDB files in the data volume"
        written = {p.relative_to(worker.upper_dir()).parts[0] for p in worker.upper_dir().rglob("*")}
        assert written <= {"run", "tmp"}, f"the worker wrote to the image's filesystem: {sorted(written)}"

        code, seconds = worker.terminate()
        assert code == 0, f"exit code {code} after SIGTERM:\n{worker.log()[-3000:]}"
        assert seconds < 30, f"took {seconds:.1f} s to stop (SHUTDOWN_TIMEOUT_SECONDS is 30)"
        log = worker.log()
        assert "Traceback" not in log, log[-3000:]
        assert "Closing event loop" in log, "the worker did not shut down through Faust"
        assert healthcheck(image, port) != 0, "the HEALTHCHECK passes with no worker running"
    finally:
        worker.remove()


def _resolve_pod_env(docs: dict[str, dict], pod: str, namespace: str) -> dict[str, str]:
    """The environment Kubernetes would give one pod of the rendered StatefulSet."""
    container = docs["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == docs["ConfigMap"]["metadata"]["name"]
        env.update(docs["ConfigMap"]["data"])
    for item in container["env"]:
        if "value" in item:
            value = item["value"]
            for name, known in env.items():  # $(VAR) references to variables defined before
                value = value.replace(f"$({name})", known)
            assert "$(" not in value, f"{item['name']} references a variable not defined before it: {value}"
        elif "fieldRef" in item["valueFrom"]:
            value = {"metadata.name": pod, "metadata.namespace": namespace}[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == docs["Secret"]["metadata"]["name"]
            value = docs["Secret"]["stringData"][ref["key"]]
        env[item["name"]] = value
    return env


async def test_chart_environment_routes_a_get_from_any_worker_to_the_owner(image, namespace, http, tmp_path):
    """Two workers from the image with the chart's rendered environment: each
    advertises its pod DNS name under the headless Service, and a GET sent to
    either reaches the owner of the key's table partition."""
    port = free_port()
    k8s_namespace = "tp-test"
    docs = tools.kinds(tools.render(
        "--set-string", f"kafka.bootstrapServers={namespace.bootstrap_servers}",
        "--set-string", f"secret.databaseUrl={namespace.database_url}",
        "--set-string", f"appId={namespace.app_id}",
        "--set-string", f"kafka.commandTopic={namespace.topic}",
        "--set", "kafka.replicationFactor=1", "--set", f"web.port={port}", "--set", "replicaCount=2",
        "--set-string", "config.BATCH_MAX_WAIT_SECONDS=0.1",
        namespace=k8s_namespace))
    statefulset, headless = docs["StatefulSet"], docs["Service/peers"]
    assert headless["spec"]["clusterIP"] == "None" and statefulset["spec"]["serviceName"] == headless["metadata"]["name"]
    pods = [f"{statefulset['metadata']['name']}-{i}" for i in range(statefulset["spec"]["replicas"])]

    # Each pod gets its own address (127.x.y.z stands for the pod IP), and the
    # containers' hosts files answer for the headless Service's DNS records.
    prefix = f"127.{random.randrange(1, 250)}.{random.randrange(1, 250)}"
    envs = {pod: _resolve_pod_env(docs, pod, k8s_namespace) for pod in pods}
    addresses = {pod: f"{prefix}.{i + 1}" for i, pod in enumerate(pods)}
    dns = {envs[pod]["WEB_HOST"]: addresses[pod] for pod in pods}
    for pod in pods:
        assert envs[pod]["WEB_HOST"] == f"{pod}.{headless['metadata']['name']}.{k8s_namespace}.svc.cluster.local"
        assert envs[pod]["WEB_PORT"] == str(port)

    workers = []
    try:
        for pod in pods:
            env = {**envs[pod], "WEB_BIND": addresses[pod]}  # the pod IP; the chart binds 0.0.0.0
            worker = ImageWorker(env=env, log_path=tmp_path / f"{pod}.log", data_dir=tmp_path / pod, port=port,
                                 image=image, hosts=dns)
            workers.append(worker.start())
        await asyncio.gather(*(w.wait_ready() for w in workers))
        urls = [f"http://{addresses[pod]}:{port}" for pod in pods]

        async def post(i: int) -> tuple[str, str]:
            timestamp = f"2021-03-04T05:{i // 60:02d}:{i % 60:02d}Z"
            async with http.post(f"{urls[0]}/api/v1/timestamp/{timestamp}") as response:
                assert response.status == 200, await response.text()
                return (await response.json())["id"], timestamp

        posted = dict(await asyncio.gather(*(post(i) for i in range(100))))

        async def served_by(url: str) -> dict[str, str] | None:
            async def get(command_id):
                async with http.get(f"{url}/api/v1/timestamp/{command_id}") as response:
                    return command_id, (await response.json())["event_timestamp"] if response.status == 200 else None
            found = dict(await asyncio.gather(*(get(i) for i in posted)))
            return found if all(found.values()) else None

        await wait_until(lambda: served_by(urls[1]), 90, "every id to be served by the second worker", interval=1)
        # With the rows gone from PostgreSQL only the tables can answer: a GET
        # to a worker that does not own the key is answered by the owner, found
        # through its advertised WEB_HOST.
        namespace.query("DELETE FROM timestamp_records RETURNING id")
        for url in urls:
            assert await served_by(url) == posted, f"GETs through {url} not all answered from the owners' tables"
        routed = sum(w.log().count("Could not route GET") for w in workers)
        assert routed == 0, "some GETs could not be routed to their owner"

        for worker in workers:
            code, _ = worker.terminate()
            assert code == 0, worker.log()[-3000:]
    finally:
        for worker in workers:
            worker.remove()
