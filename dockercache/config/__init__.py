"""dockercache.toml: its typed, frozen model (:mod:`.model`), how a file is found, read, interpolated and
checked against it (:mod:`.load`, :mod:`.interpolate`), its JSON Schema (:mod:`.schema`), and which registry
logins take an ECR token (:mod:`.ecr_hosts`). Nothing here runs Docker or talks to a network."""
