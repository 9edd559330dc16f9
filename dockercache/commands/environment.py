"""The first steps of every command: what it may touch (:class:`Environment`), loading dockercache.toml, and
planning; and the build options from the command line.

Each step takes the previous one's result; expected failures are DockercacheError subclasses, turned into a
one-line message and an exit code by the task layer. Side effects (Docker, output streams, environment) are
parameters, so every step is testable on its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters.ci import CIContext, slugify
from ..adapters.docker import Docker  # the docker CLI; python-on-whales only where it is used
from ..config.ecr_hosts import login_user
from ..config.load import find_config, load_config
from ..config.model import Config
from ..errors import ConfigError
from ..model import BuildOptions, Plan
from ..output.console import Console
from ..planning.plan import PlanInputs, make_plan
from ..planning.resolve import resolve_services
from ..planning.targets import image_options
from ..secrets import Redactor, secret_values


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
            self.console = Console(
                buildkite=self.env.get("BUILDKITE") == "true",
                redact=self.redact,
                github=self.env.get("GITHUB_ACTIONS") == "true",
            )

    @property
    def out(self) -> Console:
        assert self.console is not None
        return self.console

    def hide_passwords(self, config: Config) -> None:
        """The registry passwords of ``config`` join the redactor before anything can print them."""
        self.redact.add(login.password for login in config.registries.values() if login.password)

    def get_docker(self) -> Docker:
        if self.docker is None:
            self.docker = Docker()
        return self.docker


def load(environment: Environment, config: str | None) -> tuple[Config, CIContext]:
    path = find_config(environment.cwd, config, environment.env)
    ci = CIContext(env=environment.env, cwd=path.parent)
    cfg = load_config(path, ci.variables())
    environment.hide_passwords(cfg)
    return cfg, ci


def plan_for(environment: Environment, config: Config, ci: CIContext, options: BuildOptions) -> Plan:
    needs_compose = any(config.service(name).compose_service for name in (options.services or tuple(config.services)))
    reader = environment.get_docker().compose_config if needs_compose else None
    services = resolve_services(config, options.services, environment.env, reader)
    for secret in (secret for svc in services for secret in svc.secrets):
        # BuildKit reads the value itself; should a step print it, buildx's output passes the redactor.
        value = secret.value(environment.env)
        environment.redact.add((value, value.strip()) if value is not None else ())
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
        pull_request=ci.pull_request,
        base_branch=ci.pull_request_base_branch,
        source=str(config.path),
        labels=ci.oci_labels(),
        images=image_options(config),
        skip_unchanged={n: s.skip_unchanged for n, s in config.services.items() if s.skip_unchanged is not None},
        cache_mounts={n: s.cache_mounts for n, s in config.services.items() if s.cache_mounts is not None},
    )
    plan = make_plan(inputs, options)
    return dataclasses.replace(plan, logins=tuple((h, login_user(h, r)) for h, r in config.registries.items()))


def options_from(
    services: Sequence[str] | None,
    stage: str | None = None,
    no_cache: bool = False,
    push: bool | None = None,
    cache_write: bool = False,
    no_cache_write: bool = False,
) -> BuildOptions:
    write: bool | None = None
    if services is not None and any(not s.strip() for s in services):
        raise ConfigError("--service needs a service name")
    if cache_write and no_cache_write:
        raise ConfigError("--cache-write and --no-cache-write contradict each other")
    if cache_write:
        write = True
    if no_cache_write:
        write = False
    return BuildOptions(services=tuple(services or ()), stage=stage, no_cache=no_cache, push=push, cache_write=write)
