"""``check`` (the configuration, the Dockerfiles and Compose files it names; ``--lint``: BuildKit's checks;
``--remote``: every registry and S3 store answers) and ``init``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..adapters.netcheck import registry_host, unreachable
from ..config.caches import user_cache_dir
from ..config.model import Config
from ..errors import EnvironmentProblem
from ..init import discover, ignore_store, render, write
from ..planning.resolve import ResolvedService, resolve_services
from ..stores import kind_for
from .environment import Environment, load

if TYPE_CHECKING:  # python-on-whales and boto3 are slow to import; plan and check never need them
    pass


def cmd_check(
    environment: Environment, config: str | None, lint: bool = False, as_json: bool = False, remote: bool = False
) -> int:
    cfg, _ = load(environment, config)
    needs_compose = any(s.compose_service for s in cfg.services.values())
    reader = environment.get_docker().compose_config if needs_compose else None
    services = resolve_services(cfg, (), environment.env, reader)
    _check_builder(environment, cfg)
    reached = check_remote(cfg, environment.env) if remote else {}
    remote_code = 1 if any(problem for problem in reached.values()) else 0
    if not as_json:
        environment.out.result(f"{cfg.path}: ok ({len(cfg.services)} service{'s' if len(cfg.services) != 1 else ''})")
        for what, problem in reached.items():
            environment.out.result(f"{what}: {problem or 'reachable'}")
        code = lint_services(environment, cfg, services) if lint else 0
        return code or remote_code
    findings: dict[str, list[str]] = {}
    code = (lint_services(environment, cfg, services, findings) if lint else 0) or remote_code
    document = {"exit_code": code, "config": str(cfg.path), "services": [s.name for s in services]}
    remote_doc = {k: {"ok": not v, "problem": v} for k, v in reached.items()} if remote else None
    environment.out.document({**document, "lint": findings if lint else None, "remote": remote_doc})
    return code


def check_remote(cfg: Config, env: Mapping[str, str]) -> dict[str, str | None]:
    """``check --remote``: every cache store, registry login and image registry (where builds push) this
    configuration names, tried without building (a registry: an HTTP answer on /v2/; S3: its endpoint and
    bucket; a local store: a writable directory). {what: None when reachable, else why not}."""

    def try_store(name: str) -> str | None:
        store = cfg.caches[name]
        return kind_for(store).probe(name, store, cfg.path.parent, env)

    def try_login(host: str) -> str | None:
        server, _, port = host.rpartition(":") if ":" in host else (host, "", "443")
        why = unreachable(server, int(port) if port.isdigit() else 443)
        return f"unreachable ({why})" if why else None

    def try_push(image: str) -> str | None:
        host, port = registry_host(image)
        why = unreachable(host, port)
        return f"push registry {host}:{port} unreachable ({why})" if why else None

    pushed = {svc.image: name for name, svc in cfg.services.items() if svc.image}  # one try per image
    jobs = (
        {f"caches.{n}": (try_store, n) for n in cfg.caches}
        | {f"registries.{h}": (try_login, h) for h in cfg.registries}
        | {f"services.{name}.image": (try_push, image) for image, name in pushed.items()}
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {what: pool.submit(fn, arg) for what, (fn, arg) in jobs.items()}
        return {what: future.result() for what, future in futures.items()}


def cmd_init(environment: Environment) -> int:
    """Write a commented dockercache.toml for the project in the working directory (never over one)."""
    found, source = discover(environment.cwd, environment.get_docker().compose_config)
    path = write(environment.cwd, render(found, source))
    names = ", ".join(f.name for f in found)
    environment.out.result(f"wrote {path.name} from {source} (services: {names}); next: dockercache check")
    ignored = ignore_store(environment.cwd, user_cache_dir(environment.env))  # the built-in store's directory
    if ignored:
        environment.out.result(f"added {ignored} to .gitignore: the local cache store is inside this project")
    return 0


def _check_builder(environment: Environment, cfg: Config) -> None:
    """The ``docker`` driver: on an engine with the classic image store its BuildKit hits a ``--cache-from`` only
    every second build (moby/buildkit#2274); and it cannot be created: warn when the builder named does not exist
    (the build would stop with exit 3). Only then is Docker asked; an unreachable daemon leaves both to the build."""
    builder = cfg.builder
    if builder.driver != "docker":
        return
    try:
        docker = environment.get_docker()
        classic = not docker.containerd_image_store()
        driver = "docker" if builder.name == "default" else docker.builder_driver(builder.name)
    except EnvironmentProblem:
        return
    if classic:
        environment.out.warn(
            f"{cfg.path}: builder.driver: the 'docker' driver builds with the engine's own BuildKit, which on the "
            "classic image store hits a --cache-from only every second build (moby/buildkit#2274); a "
            f"docker-container builder (dockercache's default, {builder.image}) or the containerd image store avoids it"
        )
    if driver is None:
        environment.out.warn(
            f"{cfg.path}: builder.name: no builder '{builder.name}', and the 'docker' driver cannot be created "
            "(the Docker context's own builder is 'default'): a build would stop with exit 3"
        )


def lint_services(
    environment: Environment,
    cfg: Config,
    services: Sequence[ResolvedService],
    collect: dict[str, list[str]] | None = None,
) -> int:
    """``check --lint``: BuildKit's Dockerfile checks per service, where this buildx has them (0.15 and later);
    exit 1 when any service has a finding. Where it has not: one warning, exit 0 (the configuration is fine)."""
    docker = environment.get_docker()
    missing = docker.check_support()
    if missing is not None:
        environment.out.warn(
            f"--lint skipped: BuildKit's Dockerfile checks need buildx 0.15 or later "
            f"(docker buildx build --call=check); this is {missing}"
        )
        return 0
    builder = cfg.builder.name if docker.builder_driver(cfg.builder.name) is not None else None
    found = 0
    for svc in services:
        findings = docker.check_dockerfile(svc.context, svc.dockerfile, svc.final_target, svc.args, builder)
        found += len(findings)
        if collect is not None:  # --json: the caller prints them in its document
            collect[svc.name] = [str(f) for f in findings]
            continue
        for finding in findings:
            environment.out.result(f"{svc.name}: {finding}")
        count = f"{len(findings)} finding{'s' if len(findings) != 1 else ''}" if findings else "no findings"
        environment.out.result(f"{svc.name}: Dockerfile checks: {count}")
    return 1 if found else 0
