"""The commands behind the tasks, as a pipeline of small steps: load, resolve, plan, run, report.

Each step takes the previous one's result; expected failures are DockercacheError subclasses, turned into a
one-line message and an exit code by the task layer. Side effects (Docker, output streams, environment) are
parameters, so every step is testable on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .adapters.ci import CIContext, branch_slug, slugify
from .adapters.ecr import credentials
from .config.caches import S3Cache
from .config.ecr_hosts import login_user, token_registry
from .config.load import find_config, load_config
from .config.model import Config
from .errors import ConfigError, DockercacheError, EnvironmentProblem
from .model import BuildOptions, Plan
from .output.report import Console, RunResult, render_table
from .planning.plan import PlanInputs, make_plan, run_keys
from .planning.resolve import ResolvedService, resolve_services
from .planning.targets import image_options
from .secrets import Redactor, secret_values
from .stores import Keys
from .stores.s3.snapshots import Retention
from .stores.s3.store import open_snapshots, save_key, snapshot_key
from .timeline import Timeline

if TYPE_CHECKING:  # python-on-whales and boto3 are slow to import; plan and check never need them
    from .adapters.docker import Docker
    from .stores.s3.snapshots import Snapshots


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
            from .adapters.docker import Docker

            self.docker = Docker()
        return self.docker


def load(environment: Environment, config: str | None) -> tuple[Config, CIContext]:
    path = find_config(environment.cwd, config, environment.env)
    ci = CIContext(env=environment.env, cwd=path.parent)
    cfg = load_config(path, ci.variables())
    environment.redact.add(login.password for login in cfg.registries.values() if login.password is not None)
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


def render_plan(plan: Plan, token_logins: Collection[str] = ()) -> str:
    """``plan``'s text form; ``token_logins``: the registries logged in to with an ECR token (asked of AWS at build
    time, never here)."""
    b = plan.builder
    lines = [
        f"builder: {b.name} (driver {b.driver}{', ephemeral' if b.ephemeral else ''})",
        f"commit {plan.commit} on branch {plan.branch} (default branch {plan.default_branch})",
        f"cache writes: {'on' if plan.cache_write else 'off'} ({plan.cache_write_reason});"
        f" cache errors: {plan.cache_errors}",
    ]
    if b.creatable:
        lines.append(f"  if missing: $ docker {shlex.join(b.create_argv())}")
        if b.buildkitd_config:
            lines.append("  BUILDKITD.toml (the S3 store's endpoint is a plain-HTTP registry on the agent):")
            lines += [f"    {line}" for line in b.buildkitd_config.splitlines() if line.strip()]
    prune = b.prune_argv()
    if prune:
        lines.append(f"  after a successful build: $ docker {shlex.join(prune)}")
    if plan.bake_env:
        lines.append(f"bake environment: {', '.join(f'{k}={v}' for k, v in plan.bake_env.items())}")
    for host, user in plan.logins:
        how = "ECR token from the AWS credential chain" if host in token_logins else "password on stdin"
        lines.append(f"login: {user}@{host} ({how})")
    for svc in plan.services:
        lines.append(f"{svc.name} (cache store: {svc.store})")
        if svc.skip is not None:
            lines.append(f"  skip unchanged: {svc.skip.describe()}")
        if svc.cache_mounts is not None:
            lines += [f"  {line}" for line in svc.cache_mounts.summary()]
        for target in svc.targets:
            if not target.runs:  # reads nothing of its own, and writes only when what builds on it fails
                lines.append(f"  {target.stage}: built inside bake target {target.built_by} (in its cache)")
                if target.cache_to:
                    lines.append(f"    {'rescue to:':<11} {target.cache_to.location} (only if a stage above it fails)")
                continue
            lines.append(f"  {target.stage}{' (final)' if target.final else ''}: bake target {target.name}")
            details = {
                "platforms:": [", ".join(target.platforms)] if target.platforms else [],
                "secret:": target.secrets,  # where BuildKit reads each value, never the value
                "ssh:": target.ssh,
                "labels:": [", ".join(f"{k}={v}" for k, v in target.labels.items())] if target.labels else [],
                "attest:": target.attest,
            }
            lines += [f"    {label:<11} {value}" for label, values in details.items() for value in values]
            for i, source in enumerate(target.cache_from):
                lines.append(f"    {'cache from:' if i == 0 else '':<11} {source.location}")
            step = target.caches.step
            for label, text in step.summary() if step else []:
                lines.append(f"    {label:<11} {text}")
            if target.caches.refused:
                lines.append(f"    {'no write:':<11} {target.caches.refused}")
            if target.cache_to:
                lines.append(f"    {'cache to:':<11} {target.cache_to.location}")
            for tag in target.tags:
                lines.append(f"    {'push:' if target.push else 'load:':<11} {tag}")
    lines.append(f"$ docker {shlex.join(plan.bake_argv())}")
    lines.append("  (the bake file: dockercache plan --bake)")
    return "\n".join(lines)


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
    from concurrent.futures import ThreadPoolExecutor

    from .adapters.netcheck import registry_host, unreachable
    from .config.caches import LocalCache, RegistryCache, local_store_path
    from .errors import StoreError
    from .stores.s3.store import open_store

    def try_store(name: str) -> str | None:
        store = cfg.caches[name]
        if isinstance(store, RegistryCache):
            host, port = registry_host(store.ref)
            why = unreachable(host, port)
            return f"registry {host}:{port} unreachable ({why})" if why else None
        if isinstance(store, S3Cache):
            try:
                open_store(name, store)
            except StoreError as exc:
                return str(exc)
            return None
        if isinstance(store, LocalCache):
            directory = local_store_path(store, cfg.path.parent, env)
            existing = next((p for p in (directory, *directory.parents) if p.exists()), directory)
            return None if os.access(existing, os.W_OK) else f"{existing} is not writable"
        return None

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
    from .init import discover, render, write

    found, source = discover(environment.cwd, environment.get_docker().compose_config)
    path = write(environment.cwd, render(found, source))
    names = ", ".join(f.name for f in found)
    environment.out.result(f"wrote {path.name} from {source} (services: {names}); next: dockercache check")
    return 0


def _check_builder(environment: Environment, cfg: Config) -> None:
    """A ``docker`` driver builder cannot be created: warn when the one named does not exist (the build would
    stop with exit 3). Only then is Docker asked; an unreachable daemon leaves the question for the build."""
    builder = cfg.builder
    if builder.driver != "docker" or builder.name == "default":
        return
    try:
        driver = environment.get_docker().builder_driver(builder.name)
    except EnvironmentProblem:
        return
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


def cmd_plan(
    environment: Environment, config: str | None, options: BuildOptions, as_json: bool, bake: bool = False
) -> int:
    if not (as_json or bake):
        cfg, ci = load(environment, config)
        tokens = [h for h, login in cfg.registries.items() if token_registry(h, login)]
        environment.out.result(render_plan(plan_for(environment, cfg, ci, options), tokens))
        return 0
    with environment.out.stdout_for_document():
        cfg, ci = load(environment, config)
        plan = plan_for(environment, cfg, ci, options)
        environment.out.document(plan.bake_definition() if bake else plan.to_json())
    return 0


PROGRESS_MODES = ("auto", "tty", "plain", "quiet")


def progress_mode(requested: str, console: Console, ci: CIContext) -> str:
    """``auto``: the live display on a terminal off CI, else a line per finished step."""
    if requested not in PROGRESS_MODES:
        raise ConfigError(f"--progress: {requested!r} is not one of {', '.join(PROGRESS_MODES)}")
    if requested != "auto":
        return requested
    try:
        terminal = console.err.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return "tty" if terminal and not ci.on_ci else "plain"


def cmd_build(
    environment: Environment, config: str | None, options: BuildOptions, as_json: bool, progress: str = "auto"
) -> int:
    if progress not in PROGRESS_MODES:  # a usage error, before the configuration is read
        raise ConfigError(f"--progress: {progress!r} is not one of {', '.join(PROGRESS_MODES)}")
    timeline = Timeline()
    with timeline.step("configuration"):
        cfg, ci = load(environment, config)
    environment.out.progress = progress_mode(progress, environment.out, ci)
    return build_config(environment, cfg, ci, options, as_json, timeline)


def build_config(
    environment: Environment,
    cfg: Config,
    ci: CIContext,
    options: BuildOptions,
    as_json: bool,
    timeline: Timeline | None = None,
) -> int:
    """``build`` of a configuration loaded already (the Buildkite plugin's: its options over dockercache.toml)."""
    timeline = timeline or Timeline()
    with timeline.step("plan"):
        plan = plan_for(environment, cfg, ci, options)
    with timeline.step("runner and adapters (imports, Docker client, Buildkite agent)"):
        from .adapters.buildkite import Agent
        from .run.runner import Runner

        agent = Agent.detect(environment.env, environment.redact)
        docker = environment.get_docker()
    console = environment.out
    for note in ci.notes():
        console.warn(note)
    if options.push is None and not ci.on_ci and any(s.image for s in plan.services):
        console.info("not on CI: images are loaded, not pushed (--push to push them)")
    runner = Runner(
        docker,
        console,
        agent,
        cfg.registries,
        credentials=lambda host, login: credentials(host, login, environment.redact),
        timeline=timeline,
    )
    with console.stdout_for_document() if as_json else contextlib.nullcontext():
        try:
            result = runner.run(plan)
        except DockercacheError as exc:
            console.open_failed_group()  # the group it happened in: restore, logins, builder
            if not as_json:
                raise
            result = RunResult(exit_code=exc.exit_code, error=str(exc))
        report(console, result, as_json)
    return result.exit_code


def report(console: Console, result: RunResult, as_json: bool) -> None:
    if as_json:
        console.document(result.to_json())
        if result.error:
            console.info(f"dockercache: error: {result.error}")
        return
    if result.services:
        if console.buildkite:
            console.section(":bar_chart: dockercache report", "expanded")
        else:
            console.info("")
        console.result(render_table(result))
    for svc in result.services:
        console.result(svc.closing_line())
    line = result.cache_write_line()
    if line and result.services:
        console.result(line)
    console.warnings_footer()
    if result.error:
        console.info(f"dockercache: error: {result.error}")


def cmd_builder_create(environment: Environment, config: str | None) -> int:
    cfg, ci = load(environment, config)
    plan = plan_for(environment, cfg, ci, BuildOptions(services=(next(iter(cfg.services)),)))
    from .run.runner import ensure_builder

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


# ------------------------------------------------------------------------------------------ S3 snapshots


def _s3_store_name(config: Config, store: str | None) -> str:
    names = [n for n, c in config.caches.items() if isinstance(c, S3Cache)]
    if store:
        if store not in names:
            raise ConfigError(
                f"{config.path}: --store: no S3 cache store '{store}' (S3 stores: {', '.join(names) or 'none'})"
            )
        return store
    if len(names) != 1:
        raise ConfigError(
            f"{config.path}: --store: name the S3 cache store ({', '.join(names)})"
            if names
            else f'{config.path}: caches: no S3 cache store (type = "s3")'
        )
    return names[0]


def _snapshots(
    environment: Environment, config: str | None, store: str | None
) -> tuple[Snapshots, CIContext, Config, S3Cache]:
    cfg, ci = load(environment, config)
    name = _s3_store_name(cfg, store)
    s3 = cfg.caches[name]
    assert isinstance(s3, S3Cache)
    return open_snapshots(name, s3), ci, cfg, s3


def parse_duration(text: str, option: str) -> timedelta:
    match = re.fullmatch(r"(\d+)\s*([smhdw])", text.strip())
    if not match:
        raise ConfigError(f"{option}: '{text}' is not a duration (e.g. 90m, 12h, 7d, 2w)")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def _s3_store(config: Config, store: str | None) -> tuple[str, S3Cache]:
    name = _s3_store_name(config, store)
    s3 = config.caches[name]
    assert isinstance(s3, S3Cache)
    return name, s3


def _writer_keys(config: Config, ci: CIContext) -> Keys:
    """This run's key names and whether it may write what the default branch reads, as ``make_plan`` has
    them: a pull request writes as ``pr-N`` and never a shared key, a branch only when it is the default
    branch or a trusted one. Off CI the branch is git's, as for a build."""
    return run_keys(
        config.settings,
        slugify(ci.pipeline),
        ci.short_commit,
        ci.branch,
        ci.default_branch,
        ci.pull_request,
        ci.pull_request_base_branch,
    )


def _retention(config: Config, ci: CIContext, s3: S3Cache, delete: frozenset[str] = frozenset()) -> Retention:
    """What prune keeps: the store's templates, and the default branch (never a pull request's base)."""
    default_branch = branch_slug(config.settings.default_branch or ci.default_branch)
    return Retention(key=s3.key, cache_from=s3.cache_from, default_branch=default_branch, delete=delete)


_KEY_FIELD = re.compile(r"\{(pipeline|branch|commit)\}")
_BAD_KEY = re.compile(r"[{}\x00-\x1f\x7f]")


def _key_option(text: str, keys: Keys, option: str) -> str:
    """A snapshot key given on the command line, ``{pipeline}``, ``{branch}`` and ``{commit}`` filled in as
    in the store's templates (``--target '{pipeline}/latest'``)."""
    values = {"pipeline": keys.pipeline, "branch": keys.branch, "commit": keys.commit}
    key = _KEY_FIELD.sub(lambda m: values[m.group(1)], text.strip())
    if _BAD_KEY.search(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise ConfigError(f"{option}: {text!r} is not a snapshot key (a relative path such as {{pipeline}}/latest)")
    return key


def _write_refusal(key: str, action: str, keys: Keys, config: Config, ci: CIContext, s3: S3Cache) -> str | None:
    """Why this run may not ``action`` (promote to, delete) ``key``, or None. The rule a save follows
    (:func:`dockercache.stores.s3.store.save_key`): a key the default branch writes or reads only from the default
    branch and ``settings.trusted_branches``, never from a pull request, which writes only its own key."""
    pr = ci.pull_request
    if pr:
        if config.settings.pull_request_writes == "none":
            return f"settings.pull_request_writes: pull request #{pr} writes no cache; it may not {action} '{key}'"
        own, _ = save_key(s3, keys)
        if key != own:
            return (
                f"pull request #{pr} (branch '{ci.branch}') may not {action} '{key}': pull requests write only "
                f"their own key{f' ({own})' if own else ''}, never what other builds read"
            )
        return None
    protected = _retention(config, ci, s3).protected(key)
    if protected and not keys.writes_shared:
        default_branch = config.settings.default_branch or ci.default_branch
        return (
            f"settings.trusted_branches: branch '{ci.branch}' may not {action} '{key}' ({protected}: default "
            f"branch '{default_branch}' reads it); only the default branch and trusted branches write it: add "
            f"'{ci.branch}' to settings.trusted_branches to allow it"
        )
    return None


def cmd_promote(
    environment: Environment,
    config: str | None,
    source: str | None,
    target: str | None,
    store: str | None,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Copy a snapshot key (default: this branch's) to another (default: the first cache_from key), if this
    run may write it as a save would (checked before S3 is touched)."""
    cfg, ci = load(environment, config)
    name, s3 = _s3_store(cfg, store)
    keys = _writer_keys(cfg, ci)
    own = save_key(s3, keys)[0] or snapshot_key(s3.key, keys, keys.branch)
    source = _key_option(source, keys, "--source") if source else own
    first = s3.cache_from[0] if s3.cache_from else "{pipeline}/latest"
    target = _key_option(target, keys, "--target") if target else snapshot_key(first, keys, keys.branch)
    refused = _write_refusal(target, "promote to", keys, cfg, ci, s3)
    if refused:
        raise ConfigError(f"{cfg.path}: {refused}")
    pairs = open_snapshots(name, s3).promote(source, target, dry_run)
    if as_json:
        copies = [{"snapshot": w, "from": c} for c, w in pairs]
        environment.out.document(
            {"exit_code": 0, "source": source, "target": target, "dry_run": dry_run, "written": copies}
        )
        return 0
    for copied, written in pairs:
        environment.out.result(f"  {'would write' if dry_run else 'wrote'} {written} (from {copied})")
    verb = "would promote" if dry_run else "promoted"
    environment.out.result(f"{verb} {source} to {target}: {len(pairs)} snapshot(s), no blobs copied")
    return 0


def cmd_prune(
    environment: Environment,
    config: str | None,
    store: str | None,
    keep: int | None,
    older_than: str | None,
    grace: str,
    dry_run: bool,
    delete: Sequence[str] = (),
    as_json: bool = False,
) -> int:
    """Delete old snapshots, never those the default branch writes or reads unless named in ``delete``; then
    the blobs nothing kept needs."""
    if keep is None and older_than is None and not delete:
        raise ConfigError("prune: give --keep N and/or --older-than AGE (what to keep), or --delete KEY")
    if keep is not None and keep < 1:
        raise ConfigError(f"--keep: must be at least 1 (got {keep})")
    age = parse_duration(older_than, "--older-than") if older_than else None
    grace_period = parse_duration(grace, "--grace")
    cfg, ci = load(environment, config)
    name, s3 = _s3_store(cfg, store)
    keys = _writer_keys(cfg, ci)
    named = frozenset(_key_option(k, keys, "--delete") for k in delete)
    for key in sorted(named):
        refused = _write_refusal(key, "delete", keys, cfg, ci, s3)
        if refused:
            raise ConfigError(f"{cfg.path}: {refused}")
    result = open_snapshots(name, s3).prune(
        keep, age, dry_run, grace=grace_period, retention=_retention(cfg, ci, s3, named)
    )
    if as_json:
        environment.out.document(
            {
                "exit_code": 0,
                "dry_run": dry_run,
                "deleted": [{"snapshot": n, "reason": result.reasons[n]} for n in result.snapshots],
                "kept": [{"snapshot": n, "reason": result.reasons[n]} for n in result.kept],
                "blobs_deleted": len(result.blobs),
                "bytes_deleted": result.bytes,
            }
        )
        return 0
    verb = "would delete" if dry_run else "deleted"
    for snapshot in result.kept:
        environment.out.result(f"  keep {snapshot} ({result.reasons[snapshot]})")
    for snapshot in result.snapshots:
        environment.out.result(f"  {verb} {snapshot} ({result.reasons[snapshot]})")
    environment.out.result(
        f"{verb} {len(result.snapshots)} snapshot(s) and {len(result.blobs)} blob(s) "
        f"({result.bytes / 1e6:.1f} MB); kept {len(result.kept)} snapshot(s)"
    )
    return 0


def cmd_verify(
    environment: Environment, config: str | None, store: str | None, deep: bool, as_json: bool = False
) -> int:
    """Check that every snapshot S3 lists restores completely (blobs present with the right size; --deep: sha256)."""
    snapshots, *_ = _snapshots(environment, config, store)
    problems = snapshots.verify(deep)
    count = len(snapshots.store.list_snapshots())
    checked = (
        "every blob present with its size, downloaded and its sha256 compared with its name"
        if deep
        else ("every blob present with its size (--deep also hashes them)")
    )
    code = 1 if problems else 0
    if as_json:
        environment.out.document(
            {"exit_code": code, "snapshots": count, "checked": checked, "deep": deep, "problems": problems}
        )
        return code
    for problem in problems:
        environment.out.info(f"  {problem}")
    environment.out.result(f"{count} snapshot(s), {len(problems)} problem(s); checked {checked}")
    return code


def cmd_list(environment: Environment, config: str | None, store: str | None, as_json: bool = False) -> int:
    """The snapshots, newest first, with their age, the bytes of the blobs each names and the commit that wrote
    it (one index read each)."""
    from datetime import datetime, timezone

    from .output.report import human_age, human_bytes
    from .stores.s3.snapshots import parse_snapshot

    snapshots, *_ = _snapshots(environment, config, store)
    now = datetime.now(timezone.utc)
    rows = []
    for info in sorted(snapshots.store.list_snapshots(), key=lambda s: (s.modified, s.name), reverse=True):
        body = snapshots.store.get_snapshot(info.name)
        parsed = parse_snapshot(body) if body is not None else "is gone"
        size = sum(parsed.blobs.values()) if not isinstance(parsed, str) else None
        commit = parsed.meta.get("commit") if not isinstance(parsed, str) else None
        rows.append((info, size, (now - info.modified).total_seconds(), commit))
    if as_json:
        environment.out.document(
            {
                "exit_code": 0,
                "snapshots": [
                    {
                        "snapshot": i.name,
                        "modified": i.modified.isoformat(),
                        "age_seconds": round(a),
                        "bytes": n,
                        "commit": c,
                    }
                    for i, n, a, c in rows
                ],
            }
        )
        return 0
    table = [("modified", "age", "size", "commit", "snapshot")]
    table += [
        (
            f"{i.modified:%Y-%m-%d %H:%M:%S}",
            human_age(a),
            human_bytes(n) if n is not None else "broken",
            (c or "-")[:12],
            i.name,
        )
        for i, n, a, c in rows
    ]
    widths = [max(len(r[c]) for r in table) for c in range(4)]
    for row in table:
        environment.out.result("  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)), row[4]]))
    return 0
