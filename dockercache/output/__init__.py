"""What a person sees. buildx's progress stream split (:mod:`.rawjson`), folded into one run's vertices
(:mod:`.progress`) and attributed to bake targets (:mod:`.tally`); the live display on a terminal (:mod:`.live`);
the results of a run (:mod:`.results`), the console they and the progress lines go to (:mod:`.console`), and the
renderers (:mod:`.report`: the table, the Buildkite annotation; :mod:`.words`: counts, sizes, ages)."""
