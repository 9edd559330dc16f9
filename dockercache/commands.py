"""The commands behind the tasks, as a pipeline of small steps: load, resolve, plan, run, report.

Each step takes the previous one's result; expected failures are DockercacheError subclasses, turned into a
one-line message and an exit code by the task layer. Side effects (Docker, output streams, environment) are
parameters, so every step is testable on its own.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .ci import CIContext, slugify
from .config import Config, find_config, load_config
from .errors import ConfigError, DockercacheError
from .plan import BuildOptions, Plan, PlanInputs, make_plan
from .report import Console, RunResult, render_table
from .resolve import resolve_services
from .secrets import Redactor, secret_values

if TYPE_CHECKING:  # python-on-whales is slow to import; plan and check never need it without Compose
    from .docker import Docker


@dataclass
class Environment:
    """What a command may touch: the process environment, working directory, Docker and the console."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    docker: Docker | None = None
    console: Console | None = None

    def __post_init__(self) -> None:
        self.redact = Redactor(secret_values(self.env))
        if self.console is None:
            self.console = Console(buildkite=self.env.get("BUILDKITE") == "true", redact=self.redact)

    @property
    def out(self) -> Console:
        assert self.console is not None
        return self.console

    def get_docker(self) -> Docker:
        if self.docker is None:
            from .docker import Docker

            self.docker = Docker()
        return self.docker


def load(environment: Environment, config: str | None) -> tuple[Config, CIContext]:
    path = find_config(environment.cwd, config, environment.env)
    ci = CIContext(env=environment.env, cwd=path.parent)
    return load_config(path, ci.variables()), ci


def plan_for(environment: Environment, config: Config, ci: CIContext, options: BuildOptions) -> Plan:
    needs_compose = any(
        config.service(name).compose_service for name in (options.services or tuple(config.services))
    )
    reader = environment.get_docker().compose_config if needs_compose else None
    services = resolve_services(config, options.services, environment.env, reader)
    inputs = PlanInputs(
        services=services,
        builder=config.builder,
        settings=config.settings,
        root=config.root,
        commit=ci.short_commit,
        branch=ci.branch,
        default_branch=ci.default_branch,
        on_ci=ci.on_ci,
        job_id=ci.job_id,
        pipeline=slugify(ci.pipeline),
        cache_dir=cache_dir(environment.env),
    )
    return make_plan(inputs, options)


def cache_dir(env: Mapping[str, str]) -> Path:
    """Local working space for S3 stores: $DOCKERCACHE_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache."""
    if env.get("DOCKERCACHE_CACHE_DIR"):
        return Path(env["DOCKERCACHE_CACHE_DIR"])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "dockercache"


def render_plan(plan: Plan) -> str:
    b = plan.builder
    lines = [
        f"builder: {b.name} (driver {b.driver}{', ephemeral' if b.ephemeral else ''})",
        f"commit {plan.commit} on branch {plan.branch} (default branch {plan.default_branch})",
        f"cache writes: {'on' if plan.cache_write else 'off'} ({plan.cache_write_reason});"
        f" cache errors: {plan.cache_errors}",
    ]
    if b.creatable:
        lines.append(f"  if missing: $ docker {shlex.join(b.create_argv())}")
    for svc in plan.services:
        lines.append(f"{svc.name} (cache store: {svc.store})")
        for build in svc.builds:
            lines.append(f"  {build.stage}{' (final)' if build.final else ''}")
            for i, source in enumerate(build.cache_from):
                label = "cache from:" if i == 0 else ""
                lines.append(f"    {label:<11} {source.get('ref') or source.get('src')}")
            if build.s3:
                lines.append(f"    {'restore:':<11} {', '.join(build.s3.restore_keys)} (first complete snapshot)")
                if build.s3.save_name:
                    lines.append(f"    {'save:':<11} {build.s3.save_name}")
                if build.s3.refused:
                    lines.append(f"    {'no save:':<11} {build.s3.refused}")
            if build.cache_to:
                target = build.cache_to.get("ref") or build.cache_to.get("dest") or build.cache_to.get("name")
                lines.append(f"    {'cache to:':<11} {target}")
            for tag in build.tags:
                lines.append(f"    {'push:' if build.push else 'load:':<11} {tag}")
            lines.append(f"    $ docker {shlex.join(build.argv(b.name))}")
    return "\n".join(lines)


def cmd_check(environment: Environment, config: str | None) -> int:
    cfg, _ = load(environment, config)
    needs_compose = any(s.compose_service for s in cfg.services.values())
    reader = environment.get_docker().compose_config if needs_compose else None
    resolve_services(cfg, (), environment.env, reader)
    environment.out.result(
        f"{cfg.path}: ok ({len(cfg.services)} service{'s' if len(cfg.services) != 1 else ''})"
    )
    return 0


def cmd_plan(environment: Environment, config: str | None, options: BuildOptions, as_json: bool) -> int:
    cfg, ci = load(environment, config)
    plan = plan_for(environment, cfg, ci, options)
    if as_json:
        environment.out.result(json.dumps(plan.to_json(), indent=2))
    else:
        environment.out.result(render_plan(plan))
    return 0


def cmd_build(environment: Environment, config: str | None, options: BuildOptions, as_json: bool) -> int:
    cfg, ci = load(environment, config)
    plan = plan_for(environment, cfg, ci, options)
    from .runner import Runner

    console = environment.out
    runner = Runner(environment.get_docker(), console)
    try:
        result = runner.run(plan)
    except DockercacheError as exc:
        if not as_json:
            raise
        result = RunResult(exit_code=exc.exit_code, error=str(exc))
    report(console, result, as_json)
    return result.exit_code


def report(console: Console, result: RunResult, as_json: bool) -> None:
    if as_json:
        console.result(json.dumps(result.to_json(), indent=2))
        if result.error:
            console.info(f"dockercache: error: {result.error}")
        return
    if result.services:
        console.info("")
        console.result(render_table(result))
    for svc in result.services:
        console.result(svc.closing_line())
    if result.error:
        console.info(f"dockercache: error: {result.error}")


def cmd_builder_create(environment: Environment, config: str | None) -> int:
    cfg, ci = load(environment, config)
    plan = plan_for(environment, cfg, ci, BuildOptions(services=(next(iter(cfg.services)),)))
    from .runner import ensure_builder

    docker = environment.get_docker()
    docker.ping()
    created = ensure_builder(docker, plan.builder, environment.out)
    environment.out.result(f"builder '{plan.builder.name}' {'created' if created else 'already exists'}")
    return 0


def cmd_builder_remove(environment: Environment, config: str | None, name: str | None) -> int:
    cfg, _ = load(environment, config)
    builder = name or cfg.builder.name
    docker = environment.get_docker()
    if docker.builder_driver(builder) is None:
        environment.out.result(f"builder '{builder}' does not exist")
        return 0
    docker.remove_builder(builder)
    environment.out.result(f"builder '{builder}' removed")
    return 0


def options_from(
    services: Sequence[str] | None,
    stage: str | None = None,
    no_cache: bool = False,
    push: bool = True,
    cache_write: bool = False,
    no_cache_write: bool = False,
) -> BuildOptions:
    write: bool | None = None
    if cache_write and no_cache_write:
        raise ConfigError("--cache-write and --no-cache-write contradict each other")
    if cache_write:
        write = True
    if no_cache_write:
        write = False
    return BuildOptions(
        services=tuple(services or ()), stage=stage, no_cache=no_cache, push=push, cache_write=write
    )
