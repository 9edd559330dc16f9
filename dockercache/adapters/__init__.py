"""The world outside: thin adapters for the docker CLI and python-on-whales (:mod:`.docker`), Docker's client
configuration (:mod:`.dockerconfig`), OCI registries (:mod:`.oci`), ECR tokens (:mod:`.ecr`), the Buildkite
agent (:mod:`.buildkite`), the CI environment (:mod:`.ci`) and reachability checks (:mod:`.netcheck`).
They know configuration and the plan model, never stores, planning or the runner."""
