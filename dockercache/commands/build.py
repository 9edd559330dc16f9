"""``build``: configuration to plan to run to report, and ``builder.create`` / ``builder.remove``."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ..adapters.buildkite import Agent
from ..adapters.ci import CIContext
from ..adapters.ecr import credentials
from ..config.model import Config
from ..errors import ConfigError, DockercacheError
from ..model import BuildOptions
from ..output import github
from ..output.console import Console
from ..output.report import render_table
from ..output.results import RunResult
from ..timeline import Timeline
from .environment import Environment, load, plan_for

if TYPE_CHECKING:  # python-on-whales and boto3 are slow to import; plan and check never need them
    pass


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
        from ..run.runner import Runner  # start-up: plan and check never run a build

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
        if console.github:
            for problem in github.publish(environment.env, result, console.redact):
                console.warn(problem)
    return result.exit_code


def report(console: Console, result: RunResult, as_json: bool) -> None:
    console.end_group()  # GitHub Actions: the report is not folded into the last build's log
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
    from ..run.builder import ensure_builder  # start-up: as above

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
