"""``plan``: the plan as text (``--json``: as a document, ``--bake``: the bake file)."""

from __future__ import annotations

import shlex
from collections.abc import Collection
from typing import TYPE_CHECKING

from ..config.ecr_hosts import token_registry
from ..model import BuildOptions, Plan

if TYPE_CHECKING:  # python-on-whales and boto3 are slow to import; plan and check never need them
    pass


from .environment import Environment, load, plan_for


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
