"""The Buildkite plugin: its options (plugin.yml) mapped onto a dockercache.toml document, then ``build``.

``hooks/command`` runs ``python -m dockercache.plugin`` in the job's checkout. The options come from
``$BUILDKITE_PLUGIN_CONFIGURATION`` (the agent's JSON of them) or, without it, from the agent's
``BUILDKITE_PLUGIN_<NAME>_<OPTION>`` variables (arrays as ``_0``, ``_1``, ...). They are checked as plugin.yml's
schema says (:data:`OPTIONS` is that schema; a test keeps the two equal), mapped as docs/buildkite.md's migration table
says, merged over dockercache.toml when there is one (the options win, table by table), and checked by
:func:`dockercache.config.load.parse_config` like any file. Then the same build as ``dockercache build --service S``.
"""

from __future__ import annotations

import sys

from .. import commands
from ..commands.boundary import Stop, guarded  # the one error boundary: signals, one-line errors, exit codes
from .hook import ENGINE_BUILDER, find, run
from .mapping import Mapped, compose_names, explain, mapping, merge
from .options import OPTIONS, Namer, Option, read_options, validate

__all__ = [
    "ENGINE_BUILDER", "OPTIONS", "Mapped", "Namer", "Option", "compose_names", "explain", "find", "main", "mapping",
    "merge", "read_options", "run", "validate",
]  # fmt: skip


def main() -> None:
    """``python -m dockercache.plugin``: exit codes and one-line errors as the ``dockercache`` CLI's."""
    environment = commands.Environment()
    try:
        guarded(lambda: run(environment))
    except Stop as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        sys.exit(exc.code)
    sys.exit(0)
