"""dockercache.planning.resolve: from configuration to the paths, Dockerfile stages and Compose files a build uses."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dockercache.commands import Environment, load, plan_for
from dockercache.config.caches import CACHE_DIR_ENV, LocalCache, local_store_path
from dockercache.config.load import parse_config
from dockercache.config.model import CONFIG_NAME, Config
from dockercache.errors import ConfigError
from dockercache.model import BuildOptions
from dockercache.output.console import Console
from dockercache.planning.resolve import compose_files, resolve_service
from dockercache.stores.local import LocalSwap

VARS = {"BUILDKITE_COMMIT": "0123456789abcdef0123456789abcdef01234567", "BUILDKITE_BRANCH": "main"}
THREE_STAGES = "FROM busybox AS base\nRUN true\nFROM base AS deps\nRUN true\nFROM deps AS final\nRUN true\n"


def config_in(root: Path, raw: Mapping[str, Any]) -> Config:
    """A checked configuration as if read from ``root/dockercache.toml``."""
    return parse_config(raw, VARS, root / CONFIG_NAME)


# ------------------------------------------------------------------------------- target and dockerfile


def test_the_target_defaults_to_the_dockerfiles_last_stage(tmp_path: Path) -> None:
    """README: ``target`` defaults to the Dockerfile's last stage (here the third of three, not the first)."""
    (tmp_path / "Dockerfile").write_text(THREE_STAGES)
    svc = resolve_service(config_in(tmp_path, {"services": {"app": {"stages": ["base"]}}}), "app", VARS)
    assert svc.final_target == "final"
    assert svc.stages == ("base", "final")
    assert svc.graphs["final"] == ("base", "deps", "final")


def test_an_explicit_target_wins_over_the_last_stage(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(THREE_STAGES)
    svc = resolve_service(config_in(tmp_path, {"services": {"app": {"target": "deps"}}}), "app", VARS)
    assert (svc.final_target, svc.stages) == ("deps", ("deps",))


def test_an_unnamed_last_stage_is_stage_n_built_without_a_target(tmp_path: Path) -> None:
    """The last stage has no name: it is reported as ``stage-N`` (N its index) and built with no --target."""
    (tmp_path / "Dockerfile").write_text("FROM busybox AS base\nRUN true\nFROM base AS deps\nRUN true\nFROM deps\n")
    svc = resolve_service(config_in(tmp_path, {"services": {"app": {"stages": ["base"]}}}), "app", VARS)
    assert svc.final_target is None
    assert svc.stages == ("base", "stage-2")
    assert svc.graphs["stage-2"] == ("base", "deps", "stage-2")


def test_the_dockerfile_is_relative_to_the_context(tmp_path: Path) -> None:
    """README: ``dockerfile`` is relative to the context, and the context to dockercache.toml."""
    (tmp_path / "sub" / "x").mkdir(parents=True)
    (tmp_path / "sub" / "x" / "Df").write_text(THREE_STAGES)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "Df").write_text("FROM busybox AS decoy\n")  # relative to the root: the wrong file
    config = config_in(tmp_path, {"services": {"app": {"context": "sub", "dockerfile": "x/Df"}}})
    svc = resolve_service(config, "app", VARS)
    assert svc.context == tmp_path / "sub"
    assert svc.dockerfile == tmp_path / "sub" / "x" / "Df"
    assert svc.final_target == "final"


def test_without_a_dockerfile_key_it_is_the_contexts_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Dockerfile").write_text(THREE_STAGES)
    svc = resolve_service(config_in(tmp_path, {"services": {"app": {"context": "sub"}}}), "app", VARS)
    assert svc.dockerfile == tmp_path / "sub" / "Dockerfile"


# ------------------------------------------------------------------------------ the built-in local store


def test_without_caches_the_local_cache_is_outside_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: with no [caches], caches go to a directory of the project's own in the user's cache directory
    (``$DOCKERCACHE_CACHE_DIR`` here), wherever the command runs from (a sub-directory of the project, the
    process in yet another directory): never inside the build context, the image or the git tree."""
    project = tmp_path / "my project"
    (project / "src" / "deep").mkdir(parents=True)
    (project / CONFIG_NAME).write_text('[services.app]\nstages = ["base"]\n')
    (project / "Dockerfile").write_text(THREE_STAGES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    caches = tmp_path / "user-cache"
    environment = Environment(env={**VARS, CACHE_DIR_ENV: str(caches)}, cwd=project / "src" / "deep", console=Console())
    config, ci = load(environment, None)
    assert config.caches == {}
    plan = plan_for(environment, config, ci, BuildOptions())
    digest = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:12]
    cache = caches / f"my-project-{digest}" / "app"
    for target in plan.targets:
        assert target.caches.store == "built-in local"
        swap = target.caches.step
        assert isinstance(swap, LocalSwap), target.name
        assert swap.final == str(cache / target.stage)
        assert target.cache_to is not None and target.cache_to.get("dest") == f"{cache / target.stage}.incoming"
    assert [t.stage for t in plan.targets] == ["base", "final"]
    assert not any(p.name == ".dockercache" for p in tmp_path.rglob("*"))


def test_the_user_cache_directory_is_xdg_then_home() -> None:
    store = LocalCache(type="local")
    root = Path("/work/shop")
    key = "shop-" + hashlib.sha256(b"/work/shop").hexdigest()[:12]
    assert local_store_path(store, root, {"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/dockercache") / key
    assert local_store_path(store, root, {"HOME": "/h"}) == Path("/h/.cache/dockercache") / key
    other = local_store_path(store, Path("/elsewhere/shop"), {"HOME": "/h"})
    assert other.parent == Path("/h/.cache/dockercache") and other.name != key  # one directory per project
    given = LocalCache(type="local", path="cache")
    assert local_store_path(given, root, {"HOME": "/h"}) == Path("/work/shop/cache")


def test_the_built_in_cache_is_read_from_any_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory left by an earlier build is found as a cache source from any working directory."""
    (tmp_path / CONFIG_NAME).write_text("[services.app]\n")
    (tmp_path / "Dockerfile").write_text(THREE_STAGES)
    env = {**VARS, CACHE_DIR_ENV: str(tmp_path / "user-cache")}
    store = local_store_path(LocalCache(type="local"), tmp_path, env)
    (store / "app" / "final").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    environment = Environment(env=env, cwd=tmp_path, console=Console())
    config, ci = load(environment, None)
    (target,) = plan_for(environment, config, ci, BuildOptions()).targets
    assert [s.get("src") for s in target.cache_from] == [str(store / "app" / "final")]


# ------------------------------------------------------------------------------------- Compose files


@pytest.fixture
def compose_root(tmp_path: Path) -> Path:
    """Every Compose file name the precedence rules could pick."""
    for name in (
        "svc.yml",
        "svc-ci.yml",
        "top.yml",
        "env-a.yml",
        "env-b.yml",
        "compose.yaml",
        "compose.yml",
        "docker-compose.yml",
        "docker-compose.yaml",
    ):
        (tmp_path / name).write_text("services: {}\n")
    return tmp_path


def compose_config(root: Path, top: Sequence[str] = (), own: Sequence[str] = ()) -> Config:
    web: dict[str, Any] = {"compose_service": "web"}
    if own:
        web["compose_files"] = list(own)
    raw: dict[str, Any] = {"services": {"web": web}}
    if top:
        raw["compose_files"] = list(top)
    return config_in(root, raw)


def names(files: Sequence[Path]) -> list[str]:
    return [f.name for f in files]


ENV_FILES = {"COMPOSE_FILE": "env-a.yml,env-b.yml", "COMPOSE_PATH_SEPARATOR": ","}


def test_a_services_own_compose_files_come_first(compose_root: Path) -> None:
    config = compose_config(compose_root, top=["top.yml"], own=["svc.yml", "svc-ci.yml"])
    assert names(compose_files(config, config.service("web"), ENV_FILES)) == ["svc.yml", "svc-ci.yml"]


def test_then_the_top_level_compose_files(compose_root: Path) -> None:
    config = compose_config(compose_root, top=["top.yml"])
    assert compose_files(config, config.service("web"), ENV_FILES) == (compose_root / "top.yml",)


def test_then_compose_file_split_on_compose_path_separator(compose_root: Path) -> None:
    config = compose_config(compose_root)
    assert names(compose_files(config, config.service("web"), ENV_FILES)) == ["env-a.yml", "env-b.yml"]
    default_separator = {"COMPOSE_FILE": os.pathsep.join(["env-b.yml", "env-a.yml"])}
    assert names(compose_files(config, config.service("web"), default_separator)) == ["env-b.yml", "env-a.yml"]


def test_then_the_default_names_in_compose_order(compose_root: Path) -> None:
    config = compose_config(compose_root)
    found = []
    for name in ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"):
        found.append(names(compose_files(config, config.service("web"), {"COMPOSE_FILE": ""})))
        (compose_root / name).unlink()
    assert found == [["compose.yaml"], ["compose.yml"], ["docker-compose.yml"], ["docker-compose.yaml"]]
    with pytest.raises(ConfigError, match=r"compose_files: no Compose file given and none of compose\.yaml"):
        compose_files(config, config.service("web"), {})


def test_a_named_compose_file_that_is_missing_is_an_error_not_a_fallback(compose_root: Path) -> None:
    config = compose_config(compose_root, top=["absent.yml"])
    with pytest.raises(ConfigError, match=r"compose_files: compose file .*absent\.yml does not exist"):
        compose_files(config, config.service("web"), ENV_FILES)


def test_the_resolver_reads_the_chosen_compose_files(compose_root: Path) -> None:
    """The files chosen are the ones ``docker compose config`` is asked about; context, Dockerfile, target
    and args come from its answer."""
    (compose_root / "app").mkdir()
    (compose_root / "app" / "Dockerfile.ci").write_text(THREE_STAGES)
    asked: list[tuple[list[str], Path]] = []

    def read(files: Sequence[Path], root: Path) -> Mapping[str, Any]:
        asked.append((names(files), root))
        build = {"context": "app", "dockerfile": "Dockerfile.ci", "target": "deps", "args": {"A": 1, "B": None}}
        return {"services": {"web": {"build": build}}}

    config = compose_config(compose_root, top=["top.yml"])
    svc = resolve_service(config, "web", ENV_FILES, read)
    assert asked == [(["top.yml"], compose_root)]
    assert (svc.context, svc.dockerfile) == (compose_root / "app", compose_root / "app" / "Dockerfile.ci")
    assert (svc.final_target, dict(svc.args)) == ("deps", {"A": "1", "B": ""})


# ------------------------------------------------------------------ what BuildKit would only find mid-build


FROM_ARG = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS base\nRUN true\nFROM base AS final\n"


@pytest.mark.parametrize(
    ("dockerfile", "service", "message"),
    [
        (
            FROM_ARG,
            {},
            "services.app.args.BASE_IMAGE: missing: FROM ${BASE_IMAGE} needs it, and ARG BASE_IMAGE has no default "
            "in {dockerfile} (set this build argument, or give the ARG a default)",
        ),
        (
            "FROM ${BASE_IMAGE} AS base\n",
            {"args": {"BASE_IMAGE": "busybox"}},
            "services.app.dockerfile: FROM ${BASE_IMAGE} uses $BASE_IMAGE, which no ARG before the first FROM of "
            "{dockerfile} declares (BuildKit leaves it empty)",
        ),
        (
            "FROM busybox AS Base\nFROM busybox AS base\n",
            {},
            "services.app.dockerfile: stages 'Base' and 'base' of {dockerfile} differ only in case (Docker stage "
            "names are case-insensitive: they are the same stage)",
        ),
        (
            "FROM busybox AS base\nFROM busybox AS base\n",
            {},
            "services.app.dockerfile: stage name 'base' is used twice in {dockerfile}",
        ),
    ],
)
def test_a_dockerfile_buildkit_would_reject_mid_build_is_a_config_error(
    tmp_path: Path, dockerfile: str, service: dict[str, Any], message: str
) -> None:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    with pytest.raises(ConfigError) as info:
        resolve_service(config_in(tmp_path, {"services": {"app": service}}), "app", VARS)
    expected = message.replace("{dockerfile}", str(tmp_path / "Dockerfile"))
    assert str(info.value) == f"{tmp_path / CONFIG_NAME}: {expected}"


def test_a_from_variable_takes_its_value_from_the_args_of_dockercache_toml_or_compose(compose_root: Path) -> None:
    (compose_root / "Dockerfile").write_text(FROM_ARG)
    raw = {"services": {"app": {"args": {"BASE_IMAGE": "busybox"}}}}
    assert resolve_service(config_in(compose_root, raw), "app", VARS).stages == ("final",)

    def read(files: Sequence[Path], root: Path) -> Mapping[str, Any]:
        return {"services": {"web": {"build": {"context": ".", "args": {"BASE_IMAGE": "busybox"}}}}}

    assert resolve_service(compose_config(compose_root), "web", {}, read).args == {"BASE_IMAGE": "busybox"}


# ------------------------------------------------------------------------------------- secrets and ssh


def secret_project(root: Path) -> Path:
    (root / "Dockerfile").write_text("FROM busybox\nRUN --mount=type=secret,id=npm true\n")
    (root / "netrc").write_text("machine example.com password netrc-value\n")
    (root / "home" / ".ssh").mkdir(parents=True)
    (root / "home" / ".ssh" / "id_ed25519").write_text("key\n")
    (root / "home" / ".netrc").write_text("home-netrc\n")
    return root


def test_secrets_resolve_to_where_buildkit_reads_them_never_their_values(tmp_path: Path) -> None:
    """README: ``env`` names a variable, ``file`` is relative to dockercache.toml, ``~`` is $HOME."""
    root = secret_project(tmp_path)
    raw = {
        "services": {
            "app": {
                "secrets": {"npm": {"env": "NPM_TOKEN"}, "netrc": {"file": "netrc"}, "home": {"file": "~/.netrc"}},
                "ssh": ["default", "gh=~/.ssh/id_ed25519"],
            }
        }
    }
    env = {**VARS, "NPM_TOKEN": "npm-value", "HOME": str(root / "home"), "SSH_AUTH_SOCK": str(root / "netrc")}
    svc = resolve_service(config_in(root, raw), "app", env)
    assert [(s.id, s.env, s.src) for s in svc.secrets] == [
        ("npm", "NPM_TOKEN", None),
        ("netrc", None, root / "netrc"),
        ("home", None, root / "home" / ".netrc"),
    ]
    assert svc.ssh == ("default", f"gh={root / 'home' / '.ssh' / 'id_ed25519'}")
    assert [s.value(env) for s in svc.secrets] == [
        "npm-value",
        "machine example.com password netrc-value\n",
        "home-netrc\n",
    ]


@pytest.mark.parametrize(
    ("service", "env", "message"),
    [
        (
            {"secrets": {"npm": {"env": "NPM_TOKEN"}}},
            {},
            "services.app.secrets.npm.env: $NPM_TOKEN is not set (it holds the value of secret 'npm')",
        ),
        (
            {"secrets": {"netrc": {"file": "~/.no-netrc"}}},
            {"HOME": "/nonexistent-home"},
            "services.app.secrets.netrc.file: /nonexistent-home/.no-netrc does not exist or is not a file "
            "(the value of secret 'netrc')",
        ),
        (
            {"ssh": ["default"]},
            {},
            "services.app.ssh[0]: 'default' forwards the SSH agent, but $SSH_AUTH_SOCK is not set (start ssh-agent, "
            "or give ID=PATH to a key or socket)",
        ),
        (
            {"ssh": ["default"]},
            {"SSH_AUTH_SOCK": "/nonexistent/agent.sock"},
            "services.app.ssh[0]: 'default' forwards the SSH agent, but $SSH_AUTH_SOCK (/nonexistent/agent.sock) "
            "does not exist",
        ),
        (
            {"ssh": ["gh=/nonexistent/key"]},
            {},
            "services.app.ssh[0]: /nonexistent/key does not exist (the key or agent socket of ssh id 'gh')",
        ),
    ],
)
def test_a_secret_or_ssh_key_that_cannot_be_read_is_a_config_error_naming_the_key(
    tmp_path: Path, service: dict[str, Any], env: dict[str, str], message: str
) -> None:
    secret_project(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_service(config_in(tmp_path, {"services": {"app": service}}), "app", {**VARS, **env})
    assert str(info.value) == f"{tmp_path / CONFIG_NAME}: {message}"


def compose_secrets(build: Mapping[str, Any], secrets: Mapping[str, Any]) -> Any:
    def read(files: Sequence[Path], root: Path) -> Mapping[str, Any]:
        return {"secrets": secrets, "services": {"web": {"build": {"context": str(root), **build}}}}

    return read


def test_compose_build_secrets_and_ssh_are_read_and_dockercache_toml_wins_by_id(compose_root: Path) -> None:
    """As ``docker compose config --format json`` prints them: top-level secrets with ``file`` (absolute) or
    ``environment``, referenced from ``build.secrets`` (the id is ``target`` when given, as Compose has it)."""
    root = secret_project(compose_root)
    read = compose_secrets(
        {
            "secrets": [{"source": "npm"}, {"source": "netrc", "target": "mynetrc"}, {"source": "other"}],
            "ssh": ["default"],
        },
        {
            "npm": {"name": "p_npm", "environment": "NPM_TOKEN"},
            "netrc": {"name": "p_netrc", "file": str(root / "netrc")},
            "other": {"environment": "OTHER"},
        },
    )
    raw = {"services": {"web": {"compose_service": "web", "secrets": {"other": {"file": "netrc"}}}}}
    env = {"NPM_TOKEN": "x", "SSH_AUTH_SOCK": str(root / "netrc")}
    svc = resolve_service(config_in(root, raw), "web", env, read)
    assert [(s.id, s.env, s.src) for s in svc.secrets] == [
        ("npm", "NPM_TOKEN", None),
        ("mynetrc", None, root / "netrc"),
        ("other", None, root / "netrc"),
    ]
    assert svc.ssh == ("default",)


@pytest.mark.parametrize(
    ("build", "secrets", "message"),
    [
        (
            {"secrets": [{"source": "npm"}]},
            {"npm": {"environment": "NPM_TOKEN"}},
            "compose.yaml: secrets.npm.environment: $NPM_TOKEN is not set (it holds the value of secret 'npm')",
        ),
        (
            {"secrets": [{"source": "netrc"}]},
            {"netrc": {"file": "/nonexistent/netrc"}},
            "compose.yaml: secrets.netrc.file: /nonexistent/netrc does not exist or is not a file (the value of "
            "secret 'netrc')",
        ),
        (
            {"secrets": [{"source": "ext"}]},
            {"ext": {"external": True}},
            "compose.yaml: secrets.ext: a build secret needs file or environment (BuildKit cannot read others)",
        ),
        (
            {"ssh": ["default"]},
            {},
            "compose.yaml: services.web.build.ssh[0]: 'default' forwards the SSH agent, but $SSH_AUTH_SOCK is not "
            "set (start ssh-agent, or give ID=PATH to a key or socket)",
        ),
    ],
)
def test_a_compose_build_secret_that_cannot_be_read_is_a_config_error(
    compose_root: Path, build: dict[str, Any], secrets: dict[str, Any], message: str
) -> None:
    config = config_in(compose_root, {"services": {"app": {"compose_service": "web"}}})
    with pytest.raises(ConfigError) as info:
        resolve_service(config, "app", {}, compose_secrets(build, secrets))
    assert str(info.value) == f"{compose_root / CONFIG_NAME}: services.app.compose_service: {message}"


def test_secret_values_are_added_to_the_runs_redactor(tmp_path: Path) -> None:
    """What a build step prints passes the redactor: a secret's value (6 characters or more, from a variable of
    any name or a file) is masked wherever it appears."""
    root = secret_project(tmp_path)
    (root / CONFIG_NAME).write_text(
        '[services.app]\nsecrets = { npm = { env = "NPM_AUTH" }, netrc = { file = "netrc" } }\n'
    )
    environment = Environment(env={**VARS, "NPM_AUTH": "npm-value-1"}, cwd=root, console=Console())
    config, ci = load(environment, None)
    plan_for(environment, config, ci, BuildOptions())
    text = "npm-value-1 / machine example.com password netrc-value"
    assert environment.redact(text) == "[redacted] / [redacted]"


def test_a_compose_services_missing_dockerfile_is_blamed_on_the_compose_file_and_service(compose_root: Path) -> None:
    """Not on dockercache.toml's ``compose_service``: the Compose file and the service whose build names it."""
    config = config_in(compose_root, {"services": {"app": {"compose_service": "web"}}})
    with pytest.raises(ConfigError) as info:
        resolve_service(config, "app", {}, compose_secrets({"dockerfile": "Dockerfile.web"}, {}))
    assert str(info.value) == (
        f"{compose_root / 'compose.yaml'}: services.web.build.dockerfile: {compose_root / 'Dockerfile.web'} does "
        f"not exist (services.app of {compose_root / CONFIG_NAME})"
    )


def test_compose_additional_contexts_are_refused_in_one_line_not_dropped(compose_root: Path) -> None:
    """Dropped, the build would pull ``docker.io/library/base`` for ``FROM base``; refused, ``check`` says so."""
    (compose_root / "Dockerfile").write_text("FROM base\n")
    config = config_in(compose_root, {"services": {"app": {"compose_service": "web"}}})
    read = compose_secrets({"additional_contexts": {"base": "docker-image://busybox"}}, {})
    with pytest.raises(ConfigError) as info:
        resolve_service(config, "app", {}, read)
    assert str(info.value).startswith(
        f"{compose_root / 'compose.yaml'}: services.web.build.additional_contexts: named build contexts (base) are "
        "not supported"
    )


def test_every_dockerfile_named_is_parsed_and_each_problem_is_a_line_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox AS base\nRUNN echo hi\nFROM\n")
    config = config_in(tmp_path, {"services": {"app": {}}})
    with pytest.raises(ConfigError) as info:
        resolve_service(config, "app", VARS)
    assert info.value.lines() == [
        f"{tmp_path / 'Dockerfile'}:2: unknown instruction 'RUNN' (did you mean RUN?) "
        f"({tmp_path / CONFIG_NAME}: services.app)",
        f"{tmp_path / 'Dockerfile'}:3: FROM without an image (FROM <image> [AS <name>]) "
        f"({tmp_path / CONFIG_NAME}: services.app)",
    ]
