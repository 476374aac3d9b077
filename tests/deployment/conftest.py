"""Fixtures of the deployment tests: the built image, rendered charts, the local stack's fixtures."""

from __future__ import annotations

import pytest

from tests.deployment import tools

# The image tests run workers against the local stack, with the integration
# tests' per-test topic, consumer group and database.
from tests.integration.conftest import bootstrap_servers, http, namespace, server_url  # noqa: F401

REPORT: list[str] = []


def report(line: str) -> None:
    """A line for the run's summary (image build time and size, tool timings)."""
    REPORT.append(line)


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("deployment")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def image() -> str:
    """docker/Dockerfile built with buildah (from the local debootstrap base); its tag."""
    tools.require_buildah()
    seconds = tools.build_image()
    size = tools.image_size_mb()
    report(f"image {tools.IMAGE}: built in {seconds:.0f} s (cached layers are reused between runs), "
           f"size {size:.0f} MB (target <= 250 MB)")
    return tools.IMAGE
