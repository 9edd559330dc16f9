#!/usr/bin/env bash
# Install (where missing) and start the real test stack on loopback:
#   - Docker Engine 26 with buildx and Compose (Debian trixie packages, pinned low on bookworm),
#     using the containerd image store so the default `docker` driver can export registry caches;
#   - an OCI registry (distribution) at $DOCKERCACHE_REGISTRY (default localhost:5000);
#   - an S3 server (moto) at $DOCKERCACHE_S3_ENDPOINT (default http://127.0.0.1:5002);
#   - the project's virtualenv (.venv) with dockercache and its test tools;
#   - a busybox base image built from Debian's busybox-static and pushed to the registry
#     (nothing is pulled from the internet);
#   - graphviz (`dot`), which renders the pictures in docs/ (scripts/render_docs.py, tests/test_docs.py).
# Idempotent: running it again installs nothing and only starts what is not running; it ends with a line
# saying what it started and what it found running. `down` stops only what `up` started, by the process ids
# it recorded in $STATE (never by name: a stack someone else started is left alone).
#
# Usage: scripts/stack.sh [up|down|status]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${DOCKERCACHE_STACK_DIR:-$ROOT/.stack}
REGISTRY_PORT=${DOCKERCACHE_REGISTRY_PORT:-5000}
S3_PORT=${DOCKERCACHE_S3_PORT:-5002}
REGISTRY=localhost:$REGISTRY_PORT
S3_ENDPOINT=http://127.0.0.1:$S3_PORT
BASE_IMAGE=$REGISTRY/dockercache/busybox:stable
VENV=${DOCKERCACHE_VENV:-$ROOT/.venv}
STARTED=()
FOUND=()

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }
found() { FOUND+=("$1"); log "$1: running"; }
joined() { local out="" item; for item in "$@"; do out+="${out:+, }$item"; done; printf '%s' "${out:-nothing}"; }

started() { # started NAME PID: remember a process this script started, to stop it (and only it) on `down`
  STARTED+=("$1")
  printf '%s %s\n' "$2" "$(start_time "$2")" >"$STATE/$1.pid"
}

start_time() { # the kernel's start time of a process: with its id, it names that process and no later one
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  printf '%s' "${20}"
}

wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local limit=$1 what=$2; shift 2
  local i
  for ((i = 0; i < limit * 4; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  die "$what did not come up within ${limit}s (logs in $STATE)"
}

need_apt() {
  command -v dockerd >/dev/null 2>&1 || return 0
  docker buildx version >/dev/null 2>&1 || return 0
  docker compose version >/dev/null 2>&1 || return 0
  command -v docker-registry >/dev/null 2>&1 || return 0
  command -v htpasswd >/dev/null 2>&1 || return 0
  command -v bats >/dev/null 2>&1 || return 0 # the plugin hook's tests
  command -v dot >/dev/null 2>&1 || return 0 # graphviz: the docs' pictures (tests/test_docs.py)
  [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || return 0
  # ldd exits 1 on a static binary: read its words, not its status (under pipefail a pipe took the status)
  case "$(ldd /bin/busybox 2>&1 || true)" in
    *"not a dynamic"* | *"statically linked"*) ;;
    *) return 0 ;;
  esac
  return 1
}

install_packages() {
  need_apt || { FOUND+=("packages"); log "Docker engine, buildx, compose, registry, graphviz: present"; return 0; }
  [ "$(id -u)" = 0 ] || die "installing Docker needs root (or install docker.io>=26, docker-buildx, docker-compose, docker-registry yourself)"
  log "installing Docker engine, buildx, compose and registry from Debian packages"
  . /etc/os-release
  local extra=()
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    # bookworm ships docker.io 20.10 without buildx; trixie's packages install without a libc upgrade.
    local mirror
    mirror=$(grep -rhoE '^URIs: *https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
    mirror=${mirror:-http://deb.debian.org/debian}
    if [ ! -f /etc/apt/sources.list.d/trixie.sources ]; then
      cat >/etc/apt/sources.list.d/trixie.sources <<EOF
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
      printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' >/etc/apt/preferences.d/trixie
    fi
    extra=(docker.io/trixie docker-buildx/trixie docker-compose/trixie containerd/trixie)
    command -v docker >/dev/null 2>&1 || extra+=(docker-cli/trixie)
  else
    extra=(docker.io docker-buildx docker-compose containerd)
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${extra[@]}" docker-registry busybox-static apache2-utils iproute2 bats graphviz >/dev/null
  STARTED+=("Debian packages (installed)")
}

start_docker() {
  if docker info >/dev/null 2>&1; then found "Docker engine"; return 0; fi
  mkdir -p /etc/docker "$STATE"
  if [ ! -f /etc/docker/daemon.json ] || ! grep -q containerd-snapshotter /etc/docker/daemon.json; then
    echo '{"features": {"containerd-snapshotter": true}}' >/etc/docker/daemon.json
  fi
  log "starting dockerd"
  # setsid: the daemon must outlive this script and not share its process group.
  setsid dockerd >"$STATE/dockerd.log" 2>&1 </dev/null &
  started dockerd $!
  wait_for 60 "dockerd" docker info
  docker buildx version >/dev/null || die "docker buildx is missing"
}

registry_config() { # registry_config DIR PORT
  mkdir -p "$1/data"
  cat >"$1/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $1/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
EOF
}

start_registry() {
  if curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then found "registry $REGISTRY"; return 0; fi
  registry_config "$STATE/registry" "$REGISTRY_PORT"
  log "starting registry on $REGISTRY"
  setsid docker-registry serve "$STATE/registry/config.yml" >"$STATE/registry.log" 2>&1 </dev/null &
  started registry $!
  wait_for 30 "registry" curl -fsS "http://$REGISTRY/v2/"
}

setup_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  # The stamp holds the sha256 of the pyproject.toml and hooks/requirements.txt installed: a fresh checkout
  # (newer files, same content) installs nothing. An empty stamp is from before it held one: it stands when
  # pyproject.toml is not newer.
  local stamp=$VENV/.installed sum had=""
  local pins=()
  [ -f "$ROOT/hooks/requirements.txt" ] && pins=(-c "$ROOT/hooks/requirements.txt")
  sum=$(cat "$ROOT/pyproject.toml" "${pins[@]:1}" | sha256sum | cut -d' ' -f1)
  [ -f "$stamp" ] && had=$(cat "$stamp")
  if [ "$had" = "$sum" ] || { [ -f "$stamp" ] && [ -z "$had" ] && ! [ "$ROOT/pyproject.toml" -nt "$stamp" ]; }; then
    FOUND+=("$VENV")
    [ "$had" = "$sum" ] || printf '%s\n' "$sum" >"$stamp"
    return 0
  fi
  log "installing dockercache and test tools into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # The plugin's pinned dependencies as constraints: the suite runs what the plugin installs on agents.
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test,bench]" "${pins[@]}"
  printf '%s\n' "$sum" >"$stamp"
  STARTED+=("$VENV (installed)")
}

start_s3() {
  if curl -fsS "$S3_ENDPOINT/moto-api/" >/dev/null 2>&1; then found "S3 (moto) $S3_ENDPOINT"; return 0; fi
  log "starting S3 server (moto) on $S3_ENDPOINT"
  mkdir -p "$STATE"
  setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STATE/moto.log" 2>&1 </dev/null &
  started s3 $!
  wait_for 30 "moto S3 server" curl -fsS "$S3_ENDPOINT/moto-api/"
}

build_base_image() {
  if curl -fsS "http://$REGISTRY/v2/dockercache/busybox/manifests/stable" \
    -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    >/dev/null 2>&1; then
    FOUND+=("base image")
    log "base image $BASE_IMAGE: present"
    return 0
  fi
  log "building base image $BASE_IMAGE from Debian's busybox-static"
  local ctx
  ctx=$(mktemp -d)
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/local/bin:/usr/bin:/bin
CMD ["/bin/sh"]
EOF
  docker buildx build --builder default --progress=quiet --provenance=false \
    --tag "$BASE_IMAGE" --push "$ctx" >/dev/null
  rm -rf "$ctx"
  STARTED+=("base image (built)")
}

write_env() {
  cat >"$STATE/env" <<EOF
export DOCKERCACHE_REGISTRY=$REGISTRY
export DOCKERCACHE_S3_ENDPOINT=$S3_ENDPOINT
export DOCKERCACHE_BASE_IMAGE=$BASE_IMAGE
EOF
}

up() {
  mkdir -p "$STATE"
  install_packages
  start_docker
  start_registry
  setup_venv
  start_s3
  build_base_image
  write_env
  log "ready: registry $REGISTRY, S3 $S3_ENDPOINT, base image $BASE_IMAGE"
  log "started: $(joined "${STARTED[@]}"); found: $(joined "${FOUND[@]}")"
}

down() {
  # Only what `up` started, by the id it recorded, and only while that id is still the same process.
  local name file pid when stopped=()
  for name in s3 registry dockerd; do
    file=$STATE/$name.pid
    [ -f "$file" ] || continue
    read -r pid when <"$file" || true
    if [ -n "${pid:-}" ] && [ -n "${when:-}" ] && [ "$(start_time "$pid")" = "$when" ]; then
      kill "$pid" 2>/dev/null && stopped+=("$name (pid $pid)")
    fi
    rm -f "$file"
  done
  if [ ${#stopped[@]} -eq 0 ]; then
    log "stopped: nothing (up started nothing that still runs; what others started is left alone)"
  else
    log "stopped: $(joined "${stopped[@]}")"
  fi
}

status() {
  docker info >/dev/null 2>&1 && echo "docker: up" || echo "docker: down"
  curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && echo "registry: up" || echo "registry: down"
  curl -fsS "$S3_ENDPOINT/moto-api/" >/dev/null 2>&1 && echo "s3: up" || echo "s3: down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 [up|down|status]" ;;
esac
