"""dockercache.init: `dockercache init` writes a commented dockercache.toml that `check` accepts, from the
project's Dockerfile (its stages) or Compose file (its services that build), and never overwrites one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dockercache.config.load import parse_config
from dockercache.errors import ConfigError
from dockercache.init import Found, discover, from_compose, from_dockerfile, render, write

from .conftest import BIN
from .conftest import run_cli as run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCKERFILE = """\
FROM busybox AS Base
RUN true
FROM base AS deps
RUN echo deps
FROM deps AS test
RUN echo test
FROM busybox AS assets
RUN echo assets
FROM deps AS final
COPY --from=assets /etc/hostname /x
"""


def test_a_dockerfile_gives_its_last_stage_as_target_and_the_stages_it_builds_on() -> None:
    found = from_dockerfile("My Shop", DOCKERFILE)
    assert found == Found("my-shop", stages=("Base", "deps", "assets"), target="final", side=("test",))
    text = render([found], "Dockerfile")
    config = parse_config(tomllib.loads(text), {}, Path("dockercache.toml"))
    svc = config.service("my-shop")
    assert (svc.context, svc.stages, svc.target) == (".", ("Base", "deps", "assets"), "final")
    assert '# stages the target does not build (a test stage?), to add to stages: "test"' in text
    assert "# [caches.default]" in text and "# [builder]" in text  # the next choices, commented


def test_an_unnamed_last_stage_has_no_target_and_a_dockerfile_without_from_is_refused() -> None:
    assert from_dockerfile("app", "FROM busybox\nRUN true\n").target is None
    with pytest.raises(ConfigError, match="no FROM line"):
        from_dockerfile("app", "RUN true\n")


def test_compose_services_that_build_become_services() -> None:
    document = {"services": {"Web": {"build": {"context": "."}}, "db": {"image": "postgres"}}}
    found = from_compose(document)
    assert found == [Found("web", compose_service="Web")]
    config = parse_config(tomllib.loads(render(found, "compose.yaml")), {}, Path("dockercache.toml"))
    assert config.service("web").compose_service == "Web"


def test_it_never_overwrites_and_needs_something_to_configure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Dockerfile and no Compose file"):
        discover(tmp_path)
    write(tmp_path, "# one\n")
    with pytest.raises(ConfigError, match=r"^dockercache.toml: exists already; not overwritten"):
        write(tmp_path, "# two\n")
    assert (tmp_path / "dockercache.toml").read_text() == "# one\n"


def test_init_then_check_on_the_command_line(tmp_path: Path, docker_shim: tuple[Path, Path]) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "Dockerfile").write_text(DOCKERFILE)
    init, _ = run([str(BIN / "dockercache"), "init"], project, *docker_shim)
    assert init.returncode == 0, init.stderr
    assert init.stdout == "wrote dockercache.toml from Dockerfile (services: shop); next: dockercache check\n"
    check, _ = run([str(BIN / "dockercache"), "check"], project, *docker_shim)
    assert (check.returncode, check.stdout) == (0, "dockercache.toml: ok (1 service)\n"), check.stderr
    again, _ = run([str(BIN / "dockercache"), "init"], project, *docker_shim)
    assert again.returncode == 2 and "exists already; not overwritten" in again.stderr
    # A Compose file's services that build, read with `docker compose config` (no daemon needed).
    compose = tmp_path / "compose"
    compose.mkdir()
    (compose / "Dockerfile").write_text("FROM busybox AS final\n")
    (compose / "compose.yaml").write_text(
        "services:\n  web:\n    build: .\n  worker:\n    build:\n      context: .\n  db:\n    image: postgres\n"
    )
    made, _ = run([str(BIN / "dockercache"), "init"], compose, *docker_shim)
    assert made.returncode == 0, made.stderr
    assert made.stdout == "wrote dockercache.toml from compose.yaml (services: web, worker); next: dockercache check\n"
    checked, _ = run([str(BIN / "dockercache"), "check"], compose, *docker_shim)
    assert (checked.returncode, checked.stdout) == (0, "dockercache.toml: ok (2 services)\n"), checked.stderr


def test_a_compose_service_keeps_its_image_and_lists_the_stages_its_target_builds_on(tmp_path: Path) -> None:
    """Not `registry.example.com/...`: the Compose `image:` is where build pushes; the stages are the Dockerfile's."""
    (tmp_path / "Dockerfile.web").write_text(DOCKERFILE)
    build = {"context": str(tmp_path), "dockerfile": "Dockerfile.web", "target": "test"}
    document = {"services": {"web": {"build": build, "image": "ghcr.io/acme/web:1.2"}, "api": {"build": "."}}}
    found = from_compose(document)
    assert found[0] == Found(
        "web", compose_service="web", stages=("Base", "deps"), side=("assets", "final"), image="ghcr.io/acme/web:1.2"
    )
    text = render(found, "compose.yaml")
    assert "registry.example.com/myteam/web" not in text
    assert 'image = "ghcr.io/acme/web"' in text and 'tags = ["1.2"]' in text
    config = parse_config(tomllib.loads(text), {}, Path("dockercache.toml"))
    web = config.service("web")
    assert (web.compose_service, web.stages, web.image, web.tags) == (
        "web",
        ("Base", "deps"),
        "ghcr.io/acme/web",
        ("1.2",),
    )
    assert config.service("api").image is None  # no image: the commented example stays


def test_init_ignores_the_local_store_in_git_when_it_is_inside_the_project(
    tmp_path: Path, docker_shim: tuple[Path, Path]
) -> None:
    """A CI that points $XDG_CACHE_HOME into the checkout: the store must not end up committed."""
    (tmp_path / "Dockerfile").write_text("FROM busybox AS final\n")
    (tmp_path / ".gitignore").write_text("*.pyc")
    env = {"XDG_CACHE_HOME": str(tmp_path / ".cache"), "DOCKERCACHE_CACHE_DIR": ""}
    init, _ = run([str(BIN / "dockercache"), "init"], tmp_path, *docker_shim, env=env)
    assert init.returncode == 0, init.stderr
    assert "added /.cache/dockercache/ to .gitignore" in init.stdout
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n/.cache/dockercache/\n"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM busybox AS final\n")
    again, _ = run([str(BIN / "dockercache"), "init"], outside, *docker_shim, env={"XDG_CACHE_HOME": str(tmp_path)})
    assert again.returncode == 0 and "gitignore" not in again.stdout and not (outside / ".gitignore").exists()
