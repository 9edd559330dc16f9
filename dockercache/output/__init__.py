"""What a person sees: buildx's progress stream decoded (:mod:`.progress`), the live display on a terminal
(:mod:`.live`), and the report of a run (:mod:`.report`: the table, ``--json``, the Buildkite annotation)."""
