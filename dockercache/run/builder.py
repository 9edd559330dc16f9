"""The BuildKit builder a build runs on: made sure of before the build (created, or reused with the right driver
and booted), checked for the platforms the plan asks for, and removed afterwards when it is ephemeral."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from ..errors import EnvironmentProblem
from ..model import BuilderPlan, Plan
from ..output.console import Console
from .port import DockerPort


@contextlib.contextmanager
def builder_session(
    docker: DockerPort,
    plan: BuilderPlan,
    console: Console,
    timed: contextlib.AbstractContextManager[None] | None = None,
) -> Iterator[None]:
    """Make sure the builder exists (inside ``timed``); an ephemeral one is removed afterwards, even when the build
    fails."""
    with timed or contextlib.nullcontext():
        ensure_builder(docker, plan, console)
    try:
        yield
    finally:
        if plan.ephemeral:
            try:
                docker.remove_builder(plan.name)
                console.info(f"removed builder '{plan.name}'")
            except EnvironmentProblem as exc:
                console.warn(str(exc))


def _offers(offered: Sequence[str], wanted: str) -> bool:
    """Whether a builder listing ``offered`` builds ``wanted`` (``linux/arm64`` is served by ``linux/arm64/v8``)."""
    return any(p == wanted or (wanted.count("/") == 1 and p.startswith(f"{wanted}/")) for p in offered)


def check_platforms(docker: DockerPort, plan: Plan) -> None:
    """Every platform a target asks for is one the builder builds: exit 3 before the build, not an
    ``exec format error`` in the middle of it."""
    wanted = sorted({p for t in plan.running for p in t.platforms})
    if not wanted:
        return
    builder = plan.builder
    several = any(len(t.platforms) > 1 for t in plan.running)
    if several and builder.driver == "docker" and not docker.containerd_image_store():
        raise EnvironmentProblem(
            f"builder '{builder.name}' (driver docker) cannot build several platforms into one image on the classic "
            "image store: use a docker-container builder, or enable the containerd image store"
        )
    offered = docker.builder_platforms(builder.name)
    missing = [p for p in wanted if not _offers(offered, p)]
    if offered and missing:
        raise EnvironmentProblem(
            f"builder '{builder.name}' cannot build {', '.join(missing)} (it builds {', '.join(offered)}): install "
            "QEMU emulation (docker run --privileged --rm tonistiigi/binfmt --install all) or use a builder with "
            "such nodes"
        )


BOOT_HINT = (
    "to go on: on an engine with the containerd image store, build with the engine's own builder "
    '([builder] name = "default", driver = "docker" in dockercache.toml), or make BuildKit\'s image pullable '
    'through an image mirror (builder.image = "<mirror>/moby/buildkit:<version>")'
)
"""How to go on when a docker-container builder cannot boot (most often: ``moby/buildkit`` cannot be pulled)."""


def _boot(docker: DockerPort, name: str) -> None:
    try:
        docker.bootstrap_builder(name)
    except EnvironmentProblem as exc:
        raise EnvironmentProblem(f"{exc}; {BOOT_HINT}") from None


def ensure_builder(docker: DockerPort, plan: BuilderPlan, console: Console) -> bool:
    """Create the builder if missing, reuse it if present with the right driver. True when created."""
    if plan.name == "default" and plan.driver == "docker":
        return False  # the Docker context's own builder always exists (and asking costs 100 ms)
    driver = docker.builder_driver(plan.name)
    if driver is not None:
        if driver != plan.driver:
            raise EnvironmentProblem(
                f"builder '{plan.name}' exists with driver '{driver}', but builder.driver is '{plan.driver}' "
                f"(remove it with `docker buildx rm {plan.name}` or choose another builder.name)"
            )
        if driver != "docker":
            _boot(docker, plan.name)  # a stopped one starts here (or says why it cannot)
        return False
    if not plan.creatable:
        raise EnvironmentProblem(
            f"no builder '{plan.name}': the 'docker' driver cannot be created; use the Docker context's "
            "builder (builder.name = 'default') or another driver"
        )
    console.section(f":hammer_and_wrench: builder {plan.name}", "quiet")
    docker.create_builder(plan)
    console.info(f"created builder '{plan.name}' (driver {plan.driver})")
    try:
        _boot(docker, plan.name)
    except EnvironmentProblem:
        # One this run made and that cannot boot (its BuildKit image cannot be pulled, no privileges): leave
        # nothing behind, and stop here with exit 3 rather than fail the build with a stage showing 0/0.
        with contextlib.suppress(EnvironmentProblem):
            docker.remove_builder(plan.name)
            console.info(f"removed builder '{plan.name}' (it could not boot)")
        raise
    return True
