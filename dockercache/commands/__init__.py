"""The commands behind the tasks, as a pipeline of small steps (load, resolve, plan, run, report), a module per
family: :mod:`.environment` (what a command may touch; load, plan), :mod:`.plan`, :mod:`.check` (and init),
:mod:`.build` (and the builder), :mod:`.cache` (the S3 store's snapshots). Failures are DockercacheErrors."""

from .build import (
    PROGRESS_MODES,
    build_config,
    cmd_build,
    cmd_builder_create,
    cmd_builder_remove,
    progress_mode,
    report,
)
from .cache import cmd_list, cmd_promote, cmd_prune, cmd_verify, parse_duration, promote_config
from .check import check_remote, cmd_check, cmd_init, lint_services
from .environment import Environment, load, options_from, plan_for
from .explain import cmd_explain
from .plan import cmd_plan, render_plan

# fmt: off
__all__ = [
    "PROGRESS_MODES", "Environment", "build_config", "check_remote", "cmd_build", "cmd_builder_create",
    "cmd_builder_remove", "cmd_check", "cmd_explain", "cmd_init", "cmd_list", "cmd_plan", "cmd_promote", "cmd_prune",
    "cmd_verify", "lint_services", "load", "options_from", "parse_duration", "plan_for", "progress_mode",
    "promote_config", "render_plan", "report",
]
# fmt: on
