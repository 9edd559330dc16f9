"""Every ``docker buildx`` argument list a build runs, written here only: the bake run, the builder's create and
prune, the cache mounts' helper builds and the Dockerfile checks. The docker adapter runs them; ``plan`` shows
them. A build argument's value or a secret never goes into one: the bake file and the child's environment
carry them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .entry import _csv_field

#: Names the docker CLI reads from its own environment: a build argument of that name cannot travel there.
CLI_ENVIRONMENT = re.compile(r"PATH|HOME|TMPDIR|(DOCKER|BUILDX|BUILDKIT|XDG)_.*")


def bake(builder: str, file: str, metadata_file: str) -> list[str]:
    """``docker buildx bake`` of the default group of ``file``, progress as raw JSON, metadata written."""
    argv = ["buildx", "bake", "--builder", builder, "--progress", "rawjson", "--file", file]
    return [*argv, "--metadata-file", metadata_file, "default"]


def create(
    name: str,
    driver: str,
    driver_opts: Mapping[str, str],
    config_file: str | None,
    platforms: Sequence[str],
    endpoint: str | None,
) -> list[str]:
    """``docker buildx create``; ``config_file`` holds the builder's buildkitd.toml (None: none)."""
    argv = ["buildx", "create", "--name", name, "--driver", driver]
    for key, value in driver_opts.items():  # buildx reads each as a CSV record, as cache entries
        argv += ["--driver-opt", _csv_field(f"{key}={value}")]
    if config_file is not None:
        argv += ["--buildkitd-config", config_file]
    if platforms:
        argv += ["--platform", ",".join(platforms)]
    if endpoint:
        argv.append(endpoint)
    return argv


def prune(builder: str, keep_storage: str) -> list[str]:
    """``docker buildx prune`` of every record down to ``keep_storage``."""
    size = keep_storage.replace(" ", "")
    return ["buildx", "prune", "--builder", builder, "--force", "--all", "--keep-storage", size]


def helper_build(builder: str, dockerfile: str, output: str, context: str, provenance: bool = True) -> list[str]:
    """A small helper build (the cache mounts' restore and save), never from the layer cache, its output plain."""
    argv = ["buildx", "build", "--progress", "plain", "--builder", builder, "--no-cache"]
    if not provenance:
        argv.append("--provenance=false")
    return [*argv, "--file", dockerfile, "--output", output, context]


def check(
    context: str, dockerfile: str, target: str | None, args: Mapping[str, str], builder: str | None
) -> tuple[list[str], dict[str, str]]:
    """BuildKit's Dockerfile checks of one build (``--call=check,format=json``), and the variables the child
    needs: build arguments go by name, their values in its environment (buildx reads ``--build-arg NAME`` from
    there), but for names the CLI itself reads (:data:`CLI_ENVIRONMENT`)."""
    argv = ["buildx", "build", "--call=check,format=json", "--progress", "plain", "--file", dockerfile]
    if builder:
        argv += ["--builder", builder]
    if target:
        argv += ["--target", target]
    env: dict[str, str] = {}
    for name, value in args.items():
        if CLI_ENVIRONMENT.fullmatch(name):
            argv += ["--build-arg", f"{name}={value}"]
        else:
            argv += ["--build-arg", name]
            env[name] = value
    return [*argv, context], env
