"""The image's Dockerfile, checked without a Docker engine: what matters for running it.

Non-root with a numeric uid (Kubernetes' runAsNonRoot can only verify that), the worker as PID 1
through exec-form ENTRYPOINT/CMD (so SIGTERM reaches it and Faust shuts down warm), the README's
worker command and a real entry point of the package, multi-stage with every stage FROM
${BASE_IMAGE} (by default the official slim Python), an extra CA only as a build secret, COPY
sources that exist and that .dockerignore lets through, and STREAMAPP_* values the worker accepts.
Each check is a function returning its problems, and the mutation tests show each one failing.
tests/deploy/test_image.py builds and runs the image.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from packaging.specifiers import SpecifierSet

from streamapp.cli import OWN_COMMANDS
from streamapp.settings import ConfigError, Settings
from tests.deploy.dockerfile_syntax import (
    Stage,
    dockerignore_patterns,
    ignored,
    instructions,
    stages,
    substitute,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (ROOT / ".dockerignore").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
README = (ROOT / "README.md").read_text()


def final(text: str) -> Stage:
    return stages(text)[-1]


def command(text: str) -> list[str]:
    """The argv the container runs: exec-form ENTRYPOINT + CMD of the final stage."""
    stage = final(text)
    entrypoint, cmd = stage.last("ENTRYPOINT"), stage.last("CMD")
    return [*((entrypoint and entrypoint.exec_form()) or []), *((cmd and cmd.exec_form()) or [])]


def global_args(text: str) -> dict[str, str]:
    """The ARGs before the first FROM, each default expanded with the ARGs before it (as Docker)."""
    values: dict[str, str] = {}
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            break
        key, _, value = instruction.raw.partition("=")
        values[key.strip()] = substitute(value.strip().strip('"'), values)
    return values


def base_image_problems(text: str) -> list[str]:
    """BASE_IMAGE defaults to the official slim Python of a supported version, and every stage
    starts FROM ${BASE_IMAGE}: another base then replaces both (the venv links its python)."""
    found = stages(text)
    problems = []
    if len(found) < 2 or not found[0].name:
        problems.append("not multi-stage: a named build stage, then the runtime stage")
    default = global_args(text).get("BASE_IMAGE", "")
    official = re.fullmatch(r"python:(\d+\.\d+)-slim", default)
    if official is None:
        problems.append(f"ARG BASE_IMAGE must default to python:<version>-slim, got {default!r}")
    elif official.group(1) not in SpecifierSet(PYPROJECT["project"]["requires-python"]):
        problems.append(f"{default} is outside requires-python")
    bases = [i.flags_and_args()[1][0] for i in instructions(text) if i.keyword == "FROM"]
    if set(bases) != {"${BASE_IMAGE}"}:
        problems.append(f"every stage must start FROM ${{BASE_IMAGE}}, got {bases}")
    runtime = found[-1]
    copies = [i.flags_and_args() for i in runtime.all("COPY") + runtime.all("ADD")]
    if not copies or any("from" not in flags for flags, _ in copies):
        problems.append("the runtime stage must copy only from the build stage (no sources)")
    names = {stage.name for stage in found[:-1]}
    for flags, _ in copies:
        if "from" in flags and flags["from"] not in names:
            problems.append(f"COPY --from={flags['from']} names no earlier stage")
    return problems


def secret_problems(text: str) -> list[str]:
    """An extra CA reaches pip only as the build secret extra_ca, mounted for the RUN that sets
    PIP_CERT: an ARG, ENV, COPY or ADD of it would keep it in a layer or the image's history."""
    problems = []
    runs = [i for i in stages(text)[0].all("RUN") if "--mount=type=secret,id=extra_ca" in i.raw]
    if not any("PIP_CERT" in i.raw for i in runs):
        problems.append("no RUN of the build stage mounts the secret extra_ca for pip (PIP_CERT)")
    for instruction in instructions(text):
        if instruction.keyword in {"ARG", "ENV", "COPY", "ADD"} and re.search(
            r"PIP_CERT|extra_ca|\.pem\b|\.crt\b", instruction.raw, re.IGNORECASE
        ):
            problems.append(f"line {instruction.line}: {instruction.keyword} puts a CA in the image")
    return problems


def user_problems(text: str) -> list[str]:
    """The final USER is a numeric uid:gid other than root's."""
    user = final(text).last("USER")
    if user is None:
        return ["no USER: the image would run as root"]
    uid, _, gid = user.raw.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return [f"USER {user.raw} is not numeric: runAsNonRoot cannot verify a name"]
    if int(uid) == 0 or (gid and int(gid) == 0):
        return [f"USER {user.raw} is root"]
    return []


def command_problems(text: str) -> list[str]:
    """Exec form, the package's console script, Faust's worker command with valid options."""
    stage = final(text)
    problems = []
    for keyword in ("ENTRYPOINT", "CMD"):
        instruction = stage.last(keyword)
        if instruction is not None and instruction.exec_form() is None:
            problems.append(f"{keyword} {instruction.raw} is shell form: /bin/sh would be PID 1")
    argv = command(text)
    if not argv:
        return [*problems, "no command"]
    scripts = PYPROJECT["project"]["scripts"]
    if argv[0] not in scripts:
        return [*problems, f"{argv[0]!r} is not a console script of the package ({sorted(scripts)})"]
    module, _, function = scripts[argv[0]].partition(":")
    if not callable(getattr(importlib.import_module(module), function, None)):
        problems.append(f"{scripts[argv[0]]} is not a function")
    if len(argv) < 2 or argv[1] != "worker" or argv[1] in OWN_COMMANDS:
        return [*problems, f"{argv} does not run the worker"]
    from faust.cli.faust import cli  # what `streamapp worker` hands over to (streamapp/cli.py)

    try:
        cli.commands["worker"].make_context("worker", list(argv[2:]))
    except click.ClickException as exc:
        problems.append(f"Faust's worker refuses {argv[2:]}: {exc.format_message()}")
    if " ".join(argv) not in README:
        problems.append(f"`{' '.join(argv)}` is not the README's worker command")
    return problems


def copy_problems(text: str, dockerignore: str, root: Path = ROOT) -> list[str]:
    """Every COPY from the build context names a file of the repo that .dockerignore keeps in."""
    patterns = dockerignore_patterns_from(dockerignore)
    problems = []
    for stage in stages(text):
        for instruction in stage.all("COPY") + stage.all("ADD"):
            flags, args = instruction.flags_and_args()
            if "from" in flags:
                continue
            for source in args[:-1]:
                if not (root / source).exists():
                    problems.append(f"line {instruction.line}: COPY source {source} is not in the repo")
                elif ignored(source, patterns):
                    problems.append(f"line {instruction.line}: {source} is excluded by .dockerignore")
    return problems


def dockerignore_patterns_from(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def settings_problems(text: str) -> list[str]:
    """The image's STREAMAPP_* defaults are settings the worker accepts, fit for a container."""
    env = {k: v for k, v in final(text).env().items() if k.startswith("STREAMAPP_")}
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        return [f"the worker refuses the image's environment: {exc}"]
    problems = []
    if settings.web_bind != "0.0.0.0":
        problems.append("STREAMAPP_WEB_BIND must be 0.0.0.0: other pods and the kubelet's probes")
    if not settings.datadir.startswith("/"):
        problems.append("STREAMAPP_DATADIR must be absolute (on the volume), not relative to WORKDIR")
    exposed = final(text).last("EXPOSE")
    if exposed is None or exposed.raw.split("/")[0] != str(settings.web_port):
        problems.append(f"EXPOSE must be the web port {settings.web_port}")
    return problems


def test_the_dockerfile_parses_into_a_build_and_a_runtime_stage() -> None:
    found = stages(DOCKERFILE)
    assert [stage.name for stage in found] == ["build", None]
    assert command(DOCKERFILE) == ["streamapp", "worker", "-l", "info"]
    assert final(DOCKERFILE).last("USER") is not None


def test_base_image() -> None:
    assert base_image_problems(DOCKERFILE) == []


def test_an_extra_ca_is_a_build_secret() -> None:
    assert secret_problems(DOCKERFILE) == []


def test_user_is_numeric_and_not_root() -> None:
    assert user_problems(DOCKERFILE) == []


def test_the_worker_is_pid_1_with_the_readme_command() -> None:
    assert command_problems(DOCKERFILE) == []


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    assert copy_problems(DOCKERFILE, DOCKERIGNORE) == []


def test_the_build_context_leaves_out_local_state() -> None:
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    for path in (".venv/bin/python", "data/worker-1", ".kafka/kafka.log", "tests/unit", ".git/HEAD"):
        assert ignored(path, patterns), path


def test_settings_in_the_image() -> None:
    assert settings_problems(DOCKERFILE) == []


MUTATIONS: list[tuple[str, Callable[..., list[str]], str, str]] = [
    ("root user", user_problems, "USER 10001:10001", "USER root"),
    ("uid 0", user_problems, "USER 10001:10001", "USER 0:0"),
    ("no user", user_problems, "USER 10001:10001", ""),
    ("named user", user_problems, "USER 10001:10001", "USER streamapp"),
    ("shell form", command_problems, 'ENTRYPOINT ["streamapp"]', "ENTRYPOINT streamapp"),
    ("not a script", command_problems, 'ENTRYPOINT ["streamapp"]', 'ENTRYPOINT ["streamapp-worker"]'),
    ("not the worker", command_problems, 'CMD ["worker", "-l", "info"]', 'CMD ["produce"]'),
    ("bad option", command_problems, 'CMD ["worker", "-l", "info"]', 'CMD ["worker", "-l", "verbose"]'),
    ("unnamed build stage", base_image_problems, "FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"),
    (
        "build off the base",
        base_image_problems,
        "FROM ${BASE_IMAGE} AS build",
        "FROM python:3.11-slim AS build",
    ),
    ("runtime off the base", base_image_problems, "FROM ${BASE_IMAGE}\n", "FROM scratch\n"),
    ("other python", base_image_problems, "ARG PYTHON_VERSION=3.11", "ARG PYTHON_VERSION=3.10"),
    (
        "unofficial default",
        base_image_problems,
        "ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim",
        "ARG BASE_IMAGE=localhost/streamapp-base:bookworm",
    ),
    ("CA copied", secret_problems, "RUN --mount=type=secret,id=extra_ca", "COPY ca.pem /tmp/\nRUN"),
    ("CA as an ARG", secret_problems, "ENV PIP_NO_CACHE_DIR=1", "ARG PIP_CERT\nENV PIP_NO_CACHE_DIR=1"),
    ("CA unused", secret_problems, "export PIP_CERT=/tmp/ca.pem", "true"),
    (
        "sources in runtime",
        base_image_problems,
        "COPY --from=build /opt",
        "COPY streamapp /app\nCOPY --from=build /opt",
    ),
    ("unknown stage", base_image_problems, "COPY --from=build /opt", "COPY --from=builder /opt"),
    ("missing source", copy_problems, "COPY streamapp ./streamapp", "COPY src ./src"),
    ("bad setting", settings_problems, "STREAMAPP_WEB_BIND=0.0.0.0", "STREAMAPP_WEB_BINDING=0.0.0.0"),
    ("loopback bind", settings_problems, "STREAMAPP_WEB_BIND=0.0.0.0", "STREAMAPP_WEB_BIND=127.0.0.1"),
    (
        "relative datadir",
        settings_problems,
        "STREAMAPP_DATADIR=/var/lib/streamapp/data",
        "STREAMAPP_DATADIR=data",
    ),
]


@pytest.mark.parametrize(("check", "old", "new"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_check_catches_a_broken_dockerfile(check: Callable[..., list[str]], old: str, new: str) -> None:
    assert old in DOCKERFILE, old
    broken = DOCKERFILE.replace(old, new)
    assert check(broken, DOCKERIGNORE) if check is copy_problems else check(broken)


def test_the_copy_check_catches_a_dockerignore_that_drops_the_package() -> None:
    assert copy_problems(DOCKERFILE, DOCKERIGNORE.replace("!streamapp\n", ""))
