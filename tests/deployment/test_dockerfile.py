"""docker/Dockerfile and .dockerignore, without building: lint, base image, build context."""

from __future__ import annotations

import fnmatch
import re

from tests.deployment import tools

ROOT = tools.ROOT


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", tools.DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_hadolint_finds_nothing():
    result = tools.run([tools.tool("hadolint"), "--no-color", str(tools.DOCKERFILE)])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    # Every rule hadolint is told to ignore says why, in the comment above it.
    lines = tools.DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], f"line {i + 1}: ignore without a reason"


def test_every_stage_starts_from_the_pinned_base_image():
    froms = [args.split()[0] for word, args in instructions() if word == "FROM"]
    assert len(froms) == 2, "a builder stage and a runtime stage"
    assert set(froms) == {tools.BASE_IMAGE}, f"FROM {froms}; deploy/tools/versions.env builds {tools.BASE_IMAGE}"


def test_runtime_stage_copies_only_the_virtualenv_and_the_project_and_runs_exec_form():
    runtime = instructions()[[i for i, (w, _) in enumerate(instructions()) if w == "FROM"][-1]:]
    copies = [args for word, args in runtime if word == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv",
                      "--from=builder /opt/project /opt/venv/lib/python3.11/site-packages/"]
    [entrypoint] = [args for word, args in runtime if word == "ENTRYPOINT"]
    assert entrypoint.startswith("["), "exec form, so tini is PID 1 and gets the signals"
    [user] = [args for word, args in runtime if word == "USER"]
    assert re.fullmatch(r"[1-9][0-9]{3,}:[1-9][0-9]{3,}", user), f"USER {user}: a fixed numeric non-root UID:GID"


def dockerignore_includes(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (last matching rule wins)."""
    included = True
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or (
                pattern.startswith("**/") and any(fnmatch.fnmatchcase(p, pattern[3:]) for p in parts)):
            included = negated
    return included


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_local():
    sources = [src for word, args in instructions() if word == "COPY" and not args.startswith("--from")
               for src in args.split()[:-1]]
    assert sources
    for source in sources:
        assert dockerignore_includes(source.rstrip("/")), f"{source} is copied but excluded by .dockerignore"
        assert (ROOT / source).exists()
    for local in (".venv/bin/python", ".stack/env", "data/6066/x", ".git/config", "tests/unit/test_settings.py",
                  "app/__pycache__/main.cpython-311.pyc"):
        assert not dockerignore_includes(local), f"{local} would be sent to the build"
