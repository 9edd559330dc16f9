"""A service's bake targets: the stages it builds (all, or one and its graph with ``--stage``), each one's
Dockerfile target, tags and output, the labels and attestations of its images, and which targets run (the
leaves and the pushed stages; see :mod:`dockercache.planning.plan` for why)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config.model import Config
from ..config.services import split_variant
from ..errors import ConfigError
from ..model import BuildOptions, Output, Target, TargetCaches, target_name
from ..model.entry import _csv_field
from .resolve import ResolvedService, SecretSource


@dataclass(frozen=True)
class ImageOptions:
    """What a service's images carry besides their layers: labels and attestations."""

    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    provenance: str = "off"
    sbom: bool = False

    def attest(self) -> tuple[str, ...]:
        """bake's ``attest`` entries. Provenance is disabled explicitly when off: buildx otherwise adds a
        ``mode=min`` one to every pushed image, which makes it an index with an ``unknown/unknown`` manifest."""
        mode = self.provenance
        out = ["type=provenance,disabled=true" if mode == "off" else f"type=provenance,mode={mode}"]
        if self.sbom:
            out.append("type=sbom")
        return tuple(out)


def image_options(config: Config) -> dict[str, ImageOptions]:
    """Each service's labels and attestations: its own settings, else ``[settings]``."""
    settings = config.settings
    return {
        name: ImageOptions(
            labels=svc.labels,
            provenance=svc.provenance or settings.provenance,
            sbom=settings.sbom if svc.sbom is None else svc.sbom,
        )
        for name, svc in config.services.items()
    }


def with_image_options(
    targets: Sequence[Target], images: Mapping[str, ImageOptions], defaults: Mapping[str, str], service: str
) -> list[Target]:
    """Labels on the tagged targets (the final image, pushed stages), attestations on the pushed ones; a
    service's labels over the defaults, an empty value removing one. Caches are untouched: a label is image
    config, which no cache key includes."""
    own = images.get(service) or images.get(split_variant(service)[0]) or ImageOptions()
    labels = {k: v for k, v in {**defaults, **own.labels}.items() if v}
    return [
        dataclasses.replace(t, labels=labels if t.tags else {}, attest=own.attest() if t.push else ()) for t in targets
    ]


def selected_stages(svc: ResolvedService, stage: str | None) -> tuple[str, ...]:
    """The stages to build: all, or ``stage`` and the service's stages in its graph (--stage)."""
    if stage is None:
        return svc.stages
    if stage not in svc.stages:
        raise ConfigError(f"--stage: service '{svc.name}' has no stage '{stage}' (stages: {', '.join(svc.stages)})")
    return tuple(s for s in svc.stages if s in svc.graphs[stage])


def related_stages(svc: ResolvedService, selected: Sequence[str], stage: str) -> tuple[str, ...]:
    """The service's other stages whose caches can hold vertices of ``stage``: those it builds on (nearest
    first), then the selected stages that build on some of the same stages, then the other stages that do
    (``--stage deps`` reads the final image's cache, which holds the dependencies).

    The second kind matters because build runs leaves only: a test stage and the final image both build on
    the dependencies, and when a run that changed them failed in the tests, only the final image's cache
    holds the new dependencies. In one BuildKit session a vertex two targets share is solved by one of them,
    with that target's cache sources only; so each must be able to find it.
    """
    graph = svc.graphs[stage]
    below = [s for s in reversed(svc.stages) if s != stage and s in graph]
    order = [*selected, *(s for s in svc.stages if s not in selected)]
    beside = [s for s in order if s != stage and s not in below and set(svc.graphs[s]) & set(graph)]
    return (*below, *beside)


def make_target(
    svc: ResolvedService, stage: str, commit: str, options: BuildOptions, caches: TargetCaches, identity: str
) -> Target:
    """The target of one stage: the final one tagged with the service's tags, a pushed stage under stage_tag."""
    final = stage == svc.stages[-1]
    image = svc.image or split_variant(svc.name)[0]
    tag_names = variant_tags(svc, commit)
    tags: tuple[str, ...] = ()
    if final:
        tags = tuple(f"{image}:{t}" for t in tag_names)
    elif stage in svc.push_stages:
        tags = tuple(f"{image}:{svc.stage_tag.format(stage=stage, tag=t)}" for t in tag_names)
    output: Output = "cacheonly"
    if tags:
        output = "push" if svc.image and options.push else "load"
    return Target(
        name=target_name(svc.name, stage),
        service=svc.name,
        stage=stage,
        dockerfile_target=svc.final_target if final else stage,
        final=final,
        # Absolute: bake reads a relative dockerfile against the context, and a kept bake file may move.
        context=str(svc.context.resolve()),
        dockerfile=str(svc.dockerfile.resolve()),
        args=svc.args,
        tags=tags,
        output=output,
        caches=caches,
        graph=svc.graphs[stage],
        identity=identity,
        no_cache=options.no_cache,
        secrets=tuple(secret_spec(s) for s in svc.secrets),
        ssh=svc.ssh,
        platforms=svc.platforms,
    )


def secret_spec(secret: SecretSource) -> str:
    """A secret as bake's ``secret`` field (and ``--secret``) takes it: CSV, as buildx reads it."""
    source = f"env={secret.env}" if secret.env is not None else f"src={secret.src}"
    return ",".join(_csv_field(part) for part in (f"id={secret.id}", source))


def variant_tags(svc: ResolvedService, commit: str) -> tuple[str, ...]:
    """The tags a service pushes (default: the commit); a variant's through its ``variant_tag``."""
    tags = svc.tags or (commit,)
    if svc.variant is None:
        return tags
    return tuple(svc.variant_tag.format(tag=t, variant=svc.variant) for t in tags)


def mark_running(targets: Sequence[Target]) -> tuple[Target, ...]:
    """Run the leaves and the stages whose image is pushed; every other stage is built by the first leaf
    (in Dockerfile order) that builds on it."""
    marked = []
    for target in targets:
        leaf = not any(target.stage in other.graph for other in targets if other is not target)
        marked.append(dataclasses.replace(target, runs=leaf or bool(target.tags)))
    running = [t for t in marked if t.runs]
    return tuple(
        dataclasses.replace(t, built_by=t.name if t.runs else next(r.name for r in running if t.stage in r.graph))
        for t in marked
    )
