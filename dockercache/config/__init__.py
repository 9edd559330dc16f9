"""dockercache.toml: its typed, frozen model (:mod:`.model`, with :mod:`.caches` and :mod:`.services`; how its
fields are documented and read: :mod:`.fields`), how a file is found, read and interpolated (:mod:`.load`,
:mod:`.interpolate`) and checked against it (:mod:`.convert`, :mod:`.references`, :mod:`.encoded`), its JSON
Schema (:mod:`.schema`), and which registry logins take an ECR token (:mod:`.ecr_hosts`). Nothing here runs
Docker or talks to a network."""
