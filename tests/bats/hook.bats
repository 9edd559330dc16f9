#!/usr/bin/env bats
# hooks/command: the virtualenv per plugin version (created once, reused, under a lock, never half-built), the
# options reaching python -m dockercache.plugin in both of the agent's forms, and bad options.
# python3 and docker are fakes (tests/bats/fakes); the module itself is the real one, run by the project's
# interpreter ($DOCKERCACHE_TEST_PYTHON, default .venv/bin/python).

setup() {
  REPO=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
  HOOK=$REPO/hooks/command
  export FAKE_LOG=$BATS_TEST_TMPDIR/calls.log
  export REAL_PYTHON=${DOCKERCACHE_TEST_PYTHON:-$REPO/.venv/bin/python}
  export REPO
  export PATH=$BATS_TEST_DIRNAME/fakes:$REPO/tests/bin:$PATH
  export DOCKERCACHE_PLUGIN_VENV_ROOT=$BATS_TEST_TMPDIR/venvs
  export BUILDKITE=true BUILDKITE_AGENT_STUB_DIR=$BATS_TEST_TMPDIR/agent
  export BUILDKITE_PIPELINE_SLUG=example BUILDKITE_BRANCH=main BUILDKITE_PIPELINE_DEFAULT_BRANCH=main
  export BUILDKITE_COMMIT=0123456789abcdef0123456789abcdef01234567
  unset BUILDKITE_PLUGIN_CONFIGURATION BUILDKITE_PLUGIN_NAME DOCKERCACHE_PLUGIN_PYTHON DOCKERCACHE_CONFIG
  CHECKOUT=$BATS_TEST_TMPDIR/checkout
  cp -R "$REPO/examples/ruby" "$CHECKOUT"
  rm -rf "$CHECKOUT/.dockercache"
  cd "$CHECKOUT"
}

options() { # the agent's variables for a plain dry-run build of the example
  export BUILDKITE_PLUGIN_DOCKERCACHE_SERVICE=ruby
  export BUILDKITE_PLUGIN_DOCKERCACHE_S3_BUCKET=acme-ci-cache
  export BUILDKITE_PLUGIN_DOCKERCACHE_S3_KEY=example/main
  export BUILDKITE_PLUGIN_DOCKERCACHE_CACHE_FROM_0=example/one
  export BUILDKITE_PLUGIN_DOCKERCACHE_CACHE_FROM_1=example/two
  export BUILDKITE_PLUGIN_DOCKERCACHE_IMAGE_REPOSITORY=registry.example/acme/ruby
  export BUILDKITE_PLUGIN_DOCKERCACHE_IMAGE_NAME=v1
  export BUILDKITE_PLUGIN_DOCKERCACHE_DRY_RUN=true
}

calls() { grep -c "^$1" "$FAKE_LOG" || true; }

@test "the virtualenv is created once per plugin version and reused by the next job" {
  options
  run "$HOOK"
  [ "$status" -eq 0 ]
  [ "$(calls venv)" -eq 1 ]
  [ "$(calls pip)" -eq 1 ]
  # the pinned dependencies alone, no resolve, nothing compiled, by the host's pip into a virtualenv without pip
  grep -q "^venv --without-pip " "$FAKE_LOG"
  grep -q "^pip --python .*/bin/python .*install --no-compile --no-deps -r $REPO/hooks/requirements.txt$" "$FAKE_LOG"
  # dockercache itself runs from the plugin's checkout
  grep -q "^pythonpath $REPO$" "$FAKE_LOG"
  venvs=("$DOCKERCACHE_PLUGIN_VENV_ROOT"/*/)
  [ "${#venvs[@]}" -eq 1 ]
  # pyproject.toml's version and the plugin checkout's tree
  [[ $(basename "${venvs[0]}") =~ ^[0-9][0-9.]*-[0-9a-f]{12}$ ]]
  run "$HOOK"
  [ "$status" -eq 0 ]
  [ "$(calls venv)" -eq 1 ]
  [ "$(calls pip)" -eq 1 ]
  [ "$(calls plugin)" -eq 2 ]
  grep -q "^plugin ${venvs[0]}bin/python$" "$FAKE_LOG"
}

@test "with uv on PATH, uv makes the virtualenv and installs the pins, handed pip's index" {
  options
  export PIP_INDEX_URL=https://mirror.example/simple
  PATH=$BATS_TEST_DIRNAME/uv:$PATH run "$HOOK"
  [ "$status" -eq 0 ]
  [ "$(calls venv)" -eq 0 ]
  [ "$(calls pip)" -eq 0 ]
  grep -q "^uv venv " "$FAKE_LOG"
  grep -q "^uv install --quiet --python .*/bin/python --no-deps -r $REPO/hooks/requirements.txt index=https://mirror.example/simple$" "$FAKE_LOG"
  [[ $output == *"push:       registry.example/acme/ruby:v1"* ]]
}

@test "when uv cannot install, pip does; a pip without --python, the virtualenv's own" {
  options
  FAKE_UV_FAIL=1 FAKE_PIP_OLD=1 PATH=$BATS_TEST_DIRNAME/uv:$PATH run "$HOOK"
  [ "$status" -eq 0 ]
  [[ $output == *"uv could not install the dependencies; trying pip"* ]]
  grep -q "^venv --without-pip " "$FAKE_LOG"
  grep -q "^venv /" "$FAKE_LOG" # then one with pip
  grep -q "^pip --disable-pip-version-check .*install --no-compile --no-deps -r $REPO/hooks/requirements.txt$" "$FAKE_LOG"
  [ "$(calls plugin)" -eq 1 ]
}

@test "two jobs starting at once build the virtualenv once (a lock)" {
  options
  export FAKE_VENV_SECONDS=1
  "$HOOK" >"$BATS_TEST_TMPDIR/one" 2>&1 &
  one=$!
  "$HOOK" >"$BATS_TEST_TMPDIR/two" 2>&1 &
  two=$!
  wait "$one"
  wait "$two"
  [ "$(calls venv)" -eq 1 ]
  [ "$(calls plugin)" -eq 2 ]
  grep -q "push:.*registry.example/acme/ruby:v1" "$BATS_TEST_TMPDIR/one"
  grep -q "push:.*registry.example/acme/ruby:v1" "$BATS_TEST_TMPDIR/two"
}

@test "a failed install leaves no virtualenv to reuse; the next job builds it" {
  options
  FAKE_PIP_FAIL=1 run "$HOOK"
  [ "$status" -ne 0 ]
  [ "$(calls plugin)" -eq 0 ]
  [ -z "$(find "$DOCKERCACHE_PLUGIN_VENV_ROOT" -mindepth 1 -maxdepth 1 -type d)" ]
  run "$HOOK"
  [ "$status" -eq 0 ]
  [ "$(calls venv)" -eq 2 ]
  [ "$(calls plugin)" -eq 1 ]
}

@test "the agent's variables reach the module and make the configuration" {
  options
  rm "$CHECKOUT/dockercache.toml" # the old plugin's options alone
  export BUILDKITE_PLUGIN_DOCKERCACHE_CONFIG=compose.yaml
  export BUILDKITE_PLUGIN_DOCKERCACHE_SERVICE=app
  export BUILDKITE_PLUGIN_DOCKERCACHE_METADATA_KEY=app-image
  run "$HOOK"
  [ "$status" -eq 0 ]
  [[ $output == *"app (cache store: s3)"* ]]
  [[ $output == *"restore:    example/one, example/two, example/main"* ]]
  [[ $output == *"cache to:   "*"/example/main/app:final"* ]]
  [[ $output == *"push:       registry.example/acme/ruby:v1"* ]]
  [[ $output == *"builder: default (driver docker)"* ]] # the engine's own: it has the containerd store
  grep -q "^docker compose .*compose.yaml" "$FAKE_LOG"
}

@test "BUILDKITE_PLUGIN_CONFIGURATION wins, whatever the agent calls the plugin" {
  export BUILDKITE_PLUGIN_NAME=MY_CACHE
  export BUILDKITE_PLUGIN_MY_CACHE_SERVICE=ignored
  export BUILDKITE_PLUGIN_CONFIGURATION='{"service": "ruby", "image_repository": "registry.example/json/ruby", "push": false, "dry_run": true}'
  run "$HOOK"
  [ "$status" -eq 0 ]
  [[ $output == *"load:       registry.example/json/ruby:"* ]]
}

@test "without the JSON, the variables under the agent's name for the plugin" {
  export BUILDKITE_PLUGIN_NAME=MY_CACHE
  export BUILDKITE_PLUGIN_MY_CACHE_SERVICE=ruby
  export BUILDKITE_PLUGIN_MY_CACHE_IMAGE_REPOSITORY=registry.example/renamed/ruby
  export BUILDKITE_PLUGIN_MY_CACHE_DRY_RUN=true
  run "$HOOK"
  [ "$status" -eq 0 ]
  [[ $output == *"push:       registry.example/renamed/ruby:"* ]]
}

@test "an unknown option: exit 2, one line naming the variable, no Docker command" {
  export DOCKERCACHE_PLUGIN_PYTHON=$BATS_TEST_DIRNAME/fakes/python3 # no virtualenv: its messages stay out
  export BUILDKITE_PLUGIN_DOCKERCACHE_SERVICE=ruby
  export BUILDKITE_PLUGIN_DOCKERCACHE_SERVCE=ruby
  run "$HOOK"
  [ "$status" -eq 2 ]
  [ "${#lines[@]}" -eq 1 ]
  [ "$output" = "dockercache: error: BUILDKITE_PLUGIN_DOCKERCACHE_SERVCE: unknown option 'servce' (did you mean 'service'?)" ]
  [ "$(calls docker)" -eq 0 ]
}

@test "a bad value in the JSON: exit 2, one line naming the option" {
  export DOCKERCACHE_PLUGIN_PYTHON=$BATS_TEST_DIRNAME/fakes/python3
  export BUILDKITE_PLUGIN_CONFIGURATION='{"service": "ruby", "cache_write": "sometimes"}'
  run "$HOOK"
  [ "$status" -eq 2 ]
  [ "${#lines[@]}" -eq 1 ]
  [[ $output == "dockercache: error: plugin option cache_write: 'sometimes' is not one of"* ]]
  [ "$(calls docker)" -eq 0 ]
}

@test "a dockercache installed on the agent runs the plugin: no virtualenv, its version said" {
  options
  installed=$BATS_TEST_TMPDIR/installed/bin
  mkdir -p "$installed"
  printf '#!/usr/bin/env bash\necho "installed $*" >>"$FAKE_LOG"\nPYTHONPATH=$REPO exec "$REAL_PYTHON" "$@"\n' >"$installed/python"
  printf '#!%s\n# a console script as pip writes it\n' "$installed/python" >"$installed/dockercache"
  chmod +x "$installed/python" "$installed/dockercache"
  PATH=$installed:$PATH run "$HOOK"
  [ "$status" -eq 0 ]
  [ "$(calls venv)" -eq 0 ]
  [ "$(calls pip)" -eq 0 ]
  grep -q "^installed -m dockercache.plugin$" "$FAKE_LOG"
  [[ $output == *"dockercache plugin: dockercache 0.1.0 installed on the agent ($installed/python)"* ]]
  [[ $output == *"push:       registry.example/acme/ruby:v1"* ]]
}

@test "a dockercache on PATH whose interpreter cannot run the plugin is passed over" {
  options
  installed=$BATS_TEST_TMPDIR/installed/bin
  mkdir -p "$installed"
  printf '#!/nonexistent/python\n' >"$installed/dockercache"
  chmod +x "$installed/dockercache"
  PATH=$installed:$PATH run "$HOOK"
  [ "$status" -eq 0 ]
  [ "$(calls venv)" -eq 1 ]
  [ "$(calls plugin)" -eq 1 ]
}

@test "the hook run locally as docs/buildkite.md says" {
  # The documented command, as written between its markers, in a checkout that is a git repository.
  git init -q . && git -c user.email=t@example.invalid -c user.name=t commit -q --allow-empty -m one
  snippet=$(sed -n '/<!-- hook-locally -->/,/<!-- \/hook-locally -->/p' "$REPO/docs/buildkite.md" | sed '1,2d;$d' | sed '$d')
  [ -n "$snippet" ]
  unset BUILDKITE BUILDKITE_AGENT_STUB_DIR BUILDKITE_PIPELINE_SLUG BUILDKITE_BRANCH BUILDKITE_COMMIT
  PLUGIN=$REPO run bash -euo pipefail -c "$snippet"
  [ "$status" -eq 0 ]
  [[ $output == *"ruby (cache store: s3)"* ]]
  [[ $output == *"push:       registry.example/acme/ruby:$(git rev-parse HEAD)"* ]] # the full commit (item 6)
}
