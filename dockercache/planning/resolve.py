"""From configuration to concrete build inputs: paths, Dockerfile stages, Compose services.

This is the only step between the pure plan and the configuration that reads the disk (Dockerfiles) and,
for Compose services, asks ``docker compose config``. It still runs no build and needs no Docker daemon.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.caches import BUILTIN, CacheStore
from ..config.fields import suggest
from ..config.model import Config, default_cache_name
from ..config.services import ServiceConfig, matrix_variants, split_variant, variant_name
from ..errors import ConfigError
from .compose import compose_files, compose_image, compose_plugin_names
from .dockerfile import Stage, global_args, parse_stages, same_name, stage_graph, syntax_problems, unset_base

ComposeReader = Callable[[Sequence[Path], Path], Mapping[str, Any]]


@dataclass(frozen=True)
class ResolvedService:
    name: str
    context: Path
    dockerfile: Path
    stages: tuple[str, ...]
    """Targets to build in order; the last one is the service's final target."""
    final_target: str | None
    """``--target`` of the final build (None: the Dockerfile's last stage, which has no name)."""
    args: Mapping[str, str]
    image: str | None
    tags: tuple[str, ...]
    push_stages: tuple[str, ...]
    stage_tag: str
    store_name: str | None
    store: CacheStore
    metadata_key: str | None
    graphs: Mapping[str, tuple[str, ...]]
    """Per stage to build: the Dockerfile stages it builds too (itself included), in Dockerfile order."""
    variant: str | None = None
    """A matrix variant's id (``3.3``, ``3.3-alpine``); its name is then ``service[id]``."""
    variant_tag: str = "{tag}-{variant}"
    """A variant's image tags: this template filled with each tag and the id."""
    siblings: tuple[str, ...] = ()
    """A variant's service's other variants, by name (whose caches it must not overwrite)."""
    secrets: tuple[SecretSource, ...] = ()
    """BuildKit secrets: where BuildKit reads each value (never the value)."""
    ssh: tuple[str, ...] = ()
    """SSH agents and keys as bake's ``ssh`` field takes them: ``default``, ``ID`` or ``ID=/abs/path``."""
    platforms: tuple[str, ...] = ()
    """``os/arch[/variant]`` to build for (empty: the builder's own platform)."""
    compose_files: tuple[str, ...] = ()
    """A Compose service's files as the docker-compose plugin's ``config`` names them (see
    ``compose_plugin_names``), for that plugin's meta-data key; empty for a service that is no Compose service."""
    compose_service: str | None = None
    """The Compose service it builds, whose name the docker-compose plugin's meta-data key carries."""


@dataclass(frozen=True)
class SecretSource:
    """A build secret by id, read by BuildKit from an environment variable or a file; its value is no part of it."""

    id: str
    env: str | None = None
    src: Path | None = None

    def value(self, env: Mapping[str, str]) -> str | None:
        """The value (for the redactor only), or None when it cannot be read."""
        if self.env is not None:
            return env.get(self.env)
        assert self.src is not None
        try:
            if self.src.stat().st_size > MAX_SECRET_BYTES:
                return None
            return self.src.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None


#: Secret files larger than this are not read for the redactor (a value that long is no token to mask).
MAX_SECRET_BYTES = 1 << 20


@dataclass(frozen=True)
class BuildInputs:
    """What a Compose service's build section adds beyond context, Dockerfile, target and args."""

    secrets: tuple[SecretSource, ...] = ()
    ssh: tuple[str, ...] = ()
    image: str | None = None
    """The Compose service's ``image:`` repository, where ``Config.compose_images`` asks for it."""
    tags: tuple[str, ...] = ()
    """The tag that ``image:`` names, if any."""


def _from_compose(
    config: Config, name: str, svc: ServiceConfig, env: Mapping[str, str], read: ComposeReader
) -> tuple[Path, Path, str | None, dict[str, str], BuildInputs]:
    files = compose_files(config, svc, env)
    where = f"{config.path}: services.{name}.compose_service"
    try:
        document = read(files, config.compose_dir)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    shown = ", ".join(f.name for f in files)
    services = document.get("services") or {}
    assert svc.compose_service is not None
    entry = services.get(svc.compose_service)
    if entry is None:
        raise ConfigError(
            f"{where}: no service '{svc.compose_service}' in {shown} (services: {', '.join(services) or 'none'})"
        )
    build = entry.get("build")
    if not isinstance(build, dict) or "context" not in build:
        raise ConfigError(f"{where}: {shown}: services.{svc.compose_service}.build: missing (nothing to build)")
    context = Path(build["context"])
    if not context.is_absolute():
        context = config.compose_dir / context
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    built = f"{files[0] if len(files) == 1 else shown}: services.{svc.compose_service}.build"
    if build.get("additional_contexts"):
        named = ", ".join(build["additional_contexts"])
        raise ConfigError(
            f"{built}.additional_contexts: named build contexts ({named}) are not supported by dockercache yet "
            f"(its bake would drop them and pull an image of that name); services.{name} of {config.path}"
        )
    args = {str(k): "" if v is None else str(v) for k, v in (build.get("args") or {}).items()}
    inputs = _compose_inputs(config, document, build, f"{where}: {shown}", svc, env)
    if not dockerfile.is_file():
        raise ConfigError(f"{built}.dockerfile: {dockerfile} does not exist (services.{name} of {config.path})")
    if config.compose_images and entry.get("image"):
        at = f"{where}: {shown}: services.{svc.compose_service}.image"
        image, tags = compose_image(str(entry["image"]), at)
        inputs = dataclasses.replace(inputs, image=image, tags=tags)
    return context, dockerfile, build.get("target"), args, inputs


def _compose_inputs(
    config: Config,
    document: Mapping[str, Any],
    build: Mapping[str, Any],
    at: str,
    svc: ServiceConfig,
    env: Mapping[str, str],
) -> BuildInputs:
    """``build.secrets`` (top-level ``secrets:`` entries with ``file`` or ``environment``, as Compose hands them
    to BuildKit: the id is the entry's ``target``, else its name) and ``build.ssh``; those dockercache.toml
    gives too (by id) are left to it."""
    service = svc.compose_service
    declared = document.get("secrets") or {}
    secrets = []
    for i, item in enumerate(build.get("secrets") or ()):
        source = str(item.get("source") if isinstance(item, dict) else item)
        ident = str((item.get("target") if isinstance(item, dict) else None) or source)
        if ident in svc.secrets:
            continue
        spec = declared.get(source)
        if not isinstance(spec, dict):
            raise ConfigError(f"{at}: services.{service}.build.secrets[{i}]: no top-level secret '{source}'")
        if spec.get("environment"):
            secrets.append(_env_secret(ident, str(spec["environment"]), env, f"{at}: secrets.{source}.environment"))
        elif spec.get("file"):
            path = _expand(str(spec["file"]), config.compose_dir, env)
            secrets.append(_file_secret(ident, path, f"{at}: secrets.{source}.file"))
        else:
            raise ConfigError(
                f"{at}: secrets.{source}: a build secret needs file or environment (BuildKit cannot read others)"
            )
    own = {e.partition("=")[0] for e in svc.ssh}
    ssh = []
    for i, entry in enumerate(build.get("ssh") or ()):
        # {id: path}, should Compose ever print it so (2.26 fails to print ID=PATH entries as JSON at all)
        entries = [f"{k}={v}" if v else str(k) for k, v in entry.items()] if isinstance(entry, dict) else [str(entry)]
        where = f"{at}: services.{service}.build.ssh[{i}]"
        ssh += [_ssh_entry(e, config.compose_dir, env, where) for e in entries if e.partition("=")[0] not in own]
    return BuildInputs(secrets=tuple(secrets), ssh=tuple(ssh))


def _expand(text: str, root: Path, env: Mapping[str, str]) -> Path:
    """A path from the configuration: ``~`` expanded ($HOME), relative to ``root``, absolute."""
    if text == "~" or text.startswith("~/"):
        text = (env.get("HOME") or str(Path.home())) + text[1:]
    path = Path(os.path.expanduser(text))
    return Path(os.path.abspath(path if path.is_absolute() else root / path))


def _env_secret(ident: str, variable: str, env: Mapping[str, str], at: str) -> SecretSource:
    if variable not in env:
        raise ConfigError(f"{at}: ${variable} is not set (it holds the value of secret '{ident}')")
    return SecretSource(ident, env=variable)


def _file_secret(ident: str, path: Path, at: str) -> SecretSource:
    if not path.is_file():
        raise ConfigError(f"{at}: {path} does not exist or is not a file (the value of secret '{ident}')")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{at}: {path} cannot be read (the value of secret '{ident}')")
    return SecretSource(ident, src=path)


def _ssh_entry(entry: str, root: Path, env: Mapping[str, str], at: str) -> str:
    """An ssh entry as bake takes it: ``ID`` (the agent at $SSH_AUTH_SOCK) or ``ID=/abs/path``."""
    ident, _, target = entry.partition("=")
    if not target:
        socket = env.get("SSH_AUTH_SOCK")
        if not socket:
            raise ConfigError(
                f"{at}: '{entry}' forwards the SSH agent, but $SSH_AUTH_SOCK is not set (start ssh-agent, or "
                "give ID=PATH to a key or socket)"
            )
        if not os.path.exists(socket):
            raise ConfigError(f"{at}: '{entry}' forwards the SSH agent, but $SSH_AUTH_SOCK ({socket}) does not exist")
        return ident
    path = _expand(target, root, env)
    if not path.exists():
        raise ConfigError(f"{at}: {path} does not exist (the key or agent socket of ssh id '{ident}')")
    return f"{ident}={path}"


def _service_inputs(
    config: Config, svc: ServiceConfig, where: str, env: Mapping[str, str], compose: BuildInputs
) -> BuildInputs:
    """The service's secrets and ssh entries: Compose's, then dockercache.toml's (which win, by id)."""
    secrets = {s.id: s for s in compose.secrets}
    for ident, secret in svc.secrets.items():
        at = f"{where}.secrets.{ident}"
        if secret.env is not None:
            secrets[ident] = _env_secret(ident, secret.env, env, f"{at}.env")
        else:
            assert secret.file is not None
            secrets[ident] = _file_secret(ident, _expand(secret.file, config.root, env), f"{at}.file")
    ssh = {e.partition("=")[0]: e for e in compose.ssh}
    for i, entry in enumerate(svc.ssh):
        ssh[entry.partition("=")[0]] = _ssh_entry(entry, config.root, env, f"{where}.ssh[{i}]")
    return BuildInputs(secrets=tuple(secrets.values()), ssh=tuple(ssh.values()))


def resolve_service(
    config: Config, name: str, env: Mapping[str, str], read_compose: ComposeReader | None = None
) -> ResolvedService:
    """One service as concrete build inputs: its context, Dockerfile (read and checked), stages in build
    order, args, cache store, secrets and ssh entries (a Compose service's first, dockercache.toml's over them)."""
    svc = config.service(name)
    where = f"{config.path}: services.{name}"
    target = svc.target
    args: dict[str, str] = {}
    compose_inputs = BuildInputs()
    if svc.compose_service:
        if read_compose is None:
            raise ConfigError(f"{where}.compose_service: Compose is not available here")
        context, dockerfile, compose_target, args, compose_inputs = _from_compose(config, name, svc, env, read_compose)
        target = target or compose_target
    else:
        context = config.root / (svc.context or ".")
        dockerfile = context / (svc.dockerfile or "Dockerfile")
        if not context.is_dir():
            raise ConfigError(f"{where}.context: directory {context} does not exist")
    args.update(svc.args)
    dockerfile_stages = _read_stages(svc, target, args, dockerfile, where)
    stages, final_label, final_target = _build_order(svc, target, dockerfile_stages, dockerfile, where)
    store_name = default_cache_name(config, svc)
    store = (config.caches[store_name] if store_name else BUILTIN).resolved(config.root, env)
    inputs = _service_inputs(config, svc, where, env, compose_inputs)
    built = (*stages, final_label)
    return ResolvedService(
        name=name,
        context=context,
        dockerfile=dockerfile,
        stages=built,
        final_target=final_target,
        args=args,
        image=svc.image or compose_inputs.image,
        tags=svc.tags or (() if svc.image else compose_inputs.tags) or config.default_tags,
        push_stages=tuple(s.lower() for s in svc.push_stages),
        stage_tag=svc.stage_tag,
        platforms=svc.platforms,
        store_name=store_name,
        store=store,
        metadata_key=svc.metadata_key,
        graphs={label: stage_graph(dockerfile_stages, label) for label in built},
        secrets=inputs.secrets,
        ssh=inputs.ssh,
        compose_files=compose_plugin_names(config, svc, env) if svc.compose_service else (),
        compose_service=svc.compose_service,
    )


def _read_stages(
    svc: ServiceConfig, target: str | None, args: Mapping[str, str], dockerfile: Path, where: str
) -> tuple[Stage, ...]:
    """The Dockerfile's stages, checked for every variant's args, with the service's stages and target among
    them."""
    file_key = "compose_service" if svc.compose_service else "dockerfile"
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError:
        raise ConfigError(f"{where}.{file_key}: Dockerfile {dockerfile} does not exist or cannot be read") from None
    problems = [ConfigError(f"{dockerfile}:{n}: {what} ({where})") for n, what in syntax_problems(text)]
    if problems:
        raise ConfigError(str(problems[0]), more=tuple(problems[1:]))
    dockerfile_stages = parse_stages(text)
    if not dockerfile_stages:
        raise ConfigError(f"{where}.dockerfile: {dockerfile} has no FROM instruction")
    for _, values in matrix_variants(svc) or (("", {}),):  # each variant's args, matrix values included
        _check_dockerfile(text, dockerfile_stages, {**args, **values}, dockerfile, f"{where}.{file_key}", where)
    named = [s.name for s in dockerfile_stages if s.name]
    for key, stage in [*((f"stages[{i}]", s) for i, s in enumerate(svc.stages)), ("target", target)]:
        if stage is not None and stage.lower() not in named:
            raise ConfigError(
                f"{where}.{key}: no stage '{stage}' in {dockerfile}{suggest(stage.lower(), named)}"
                f" (stages: {', '.join(named) or 'none named'})"
            )
    return dockerfile_stages


def _build_order(
    svc: ServiceConfig, target: str | None, dockerfile_stages: tuple[Stage, ...], dockerfile: Path, where: str
) -> tuple[list[str], str, str | None]:
    """The service's stages before the final one (in Dockerfile order), the final target's label, and its
    ``--target`` (None: the Dockerfile's last stage, unnamed)."""
    stages = [s.lower() for s in svc.stages]
    if target is None:
        final_label = dockerfile_stages[-1].label
        final_target = dockerfile_stages[-1].name
    else:
        final_label = final_target = target.lower()
    order = [s.label for s in dockerfile_stages]
    positions = [order.index(s) for s in stages]
    if positions != sorted(positions):
        raise ConfigError(f"{where}.stages: stages must follow their order in {dockerfile} ({', '.join(order)})")
    if final_label in stages:
        if stages[-1] != final_label:
            raise ConfigError(f"{where}.stages: the final target '{final_label}' must come last")
        stages.pop()
    elif positions and order.index(final_label) < positions[-1]:
        raise ConfigError(f"{where}.target: '{final_label}' comes before stage '{stages[-1]}' in {dockerfile}")
    return stages, final_label, final_target


def _check_dockerfile(
    text: str, stages: tuple[Stage, ...], args: Mapping[str, str], dockerfile: Path, at: str, where: str
) -> None:
    """What BuildKit would reject only once the build runs: two stages of one name, a FROM with no image."""
    twins = same_name(stages)
    if twins:
        first, second = (s.spelled for s in twins)
        if first == second:
            raise ConfigError(f"{at}: stage name '{first}' is used twice in {dockerfile}")
        raise ConfigError(
            f"{at}: stages '{first}' and '{second}' of {dockerfile} differ only in case "
            "(Docker stage names are case-insensitive: they are the same stage)"
        )
    unset = unset_base(text, stages, args)
    if unset:
        stage, name = unset
        if name not in global_args(text):
            raise ConfigError(
                f"{at}: FROM {stage.base} uses ${name}, which no ARG before the first FROM of {dockerfile} "
                "declares (BuildKit leaves it empty)"
            )
        raise ConfigError(
            f"{where}.args.{name}: missing: FROM {stage.base} needs it, and ARG {name} has no default in "
            f"{dockerfile} (set this build argument, or give the ARG a default)"
        )


def resolve_services(
    config: Config,
    names: Sequence[str],
    env: Mapping[str, str],
    read_compose: ComposeReader | None = None,
) -> tuple[ResolvedService, ...]:
    """The named services (all of them when ``names`` is empty), in the order given. A service with a
    ``matrix`` is its variants (``ruby`` is ``ruby[3.2]`` and ``ruby[3.3]``); ``ruby[3.3]`` names one."""
    chosen = list(names) or list(config.services)
    resolved: dict[str, ResolvedService] = {}
    out: dict[str, ResolvedService] = {}
    for name in chosen:
        base, wanted = split_variant(name)
        svc = config.service(base)
        variants = matrix_variants(svc)
        ids = [v for v, _ in variants]
        names = [variant_name(base, v) for v in ids]
        if wanted is not None and wanted not in ids:
            raise ConfigError(
                f"{config.path}: no variant '{name}'"
                + (
                    f"{suggest(name, names)} (variants: {', '.join(names)})"
                    if ids
                    else f": services.{base} has no matrix"
                )
            )
        if base not in resolved:
            resolved[base] = resolve_service(config, base, env, read_compose)
        if not variants:
            out.setdefault(base, resolved[base])
        for variant, values in variants:
            if wanted is None or variant == wanted:
                out.setdefault(variant_name(base, variant), _variant(resolved[base], svc, variant, values, ids))
    return tuple(out.values())


def _variant(
    base: ResolvedService, svc: ServiceConfig, variant: str, values: Mapping[str, str], ids: Sequence[str]
) -> ResolvedService:
    """One variant of a matrix service: its name, its matrix values merged over the args, its own meta-data key."""
    key = base.metadata_key
    if key is not None and key != "docker-compose":  # that one is per service name: ..-tag-ruby[3.3]
        key = f"{key}-{variant}"
    return dataclasses.replace(
        base,
        name=variant_name(base.name, variant),
        args={**base.args, **values},
        metadata_key=key,
        variant=variant,
        variant_tag=svc.variant_tag,
        siblings=tuple(variant_name(base.name, v) for v in ids if v != variant),
    )
