# A real container engine for scripts/docker-check: podman (rootful) behind the Docker API, for
# docker-compose v1; base images made locally when no registry can be reached.
#
# Source this file, then:
#   ensure_container_tools         install podman, runc, netavark, iptables, docker-compose, debootstrap
#                                  (as root) and the containers.conf settings podman needs here
#   start_podman_service DIR       a private Docker-API socket in DIR; exports DOCKER_HOST
#   start_healthcheck_loop PROJECT run the compose project's healthchecks (podman 4.3 runs them
#                                  from systemd timers; without systemd nobody would)
#   ensure_base_images RUST_TAG    debian:bookworm-slim, rust:RUST_TAG, postgres:15, redis:7,
#                                  each made locally only when no image of that name exists
#   stop_container_helpers         stop the loop and the service started above (by PID)
#
# A real image of any of these names (pulled, or loaded by hand) is always used as it is.

if ! declare -F say >/dev/null; then
    say() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
fi

CONTAINERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../containers" && pwd)"
podman_service_pid=""
healthcheck_loop_pid=""

# Installs what is missing, with apt-get when running as root; otherwise says what to install.
# iptables too: netavark sets up container networks with it, and fails with a bare "No such
# file or directory" when it is missing.
ensure_container_tools() {
    local need=() pair
    for pair in podman=podman runc=runc docker-compose=docker-compose debootstrap=debootstrap \
        curl=curl openssl=openssl /usr/lib/podman/netavark=netavark \
        /usr/lib/podman/aardvark-dns=aardvark-dns iptables=iptables; do
        command -v "${pair%%=*}" >/dev/null 2>&1 || need+=("${pair#*=}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            say "missing: ${need[*]}. Install them with: sudo apt-get install --no-install-recommends ${need[*]}"
            exit 1
        fi
        say "installing ${need[*]} with apt-get"
        apt-get update -qq
        # Without recommends: podman's would pull in crun, fuse-overlayfs and slirp4netns, and
        # docker-compose's the Docker engine.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    configure_podman
}

# What podman needs on this kind of machine, as a drop-in so the machine's own containers.conf
# stays untouched:
# - runc: crun 1.8 refuses to start containers here ("cgroups in hybrid mode not supported");
# - limits the kernel grants: podman's default rlimits (1048576 open files) cannot be set here;
# - netavark with aardvark-dns: with the CNI plugins of a recommends-less install, compose
#   services cannot find each other by name.
PODMAN_CONF=/etc/containers/containers.conf.d/50-latchkey.conf
PODMAN_CONF_TEXT='# Written by latchkey'"'"'s scripts/lib/containers.sh (see there why).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"'

configure_podman() {
    if [ ! -f "$PODMAN_CONF" ] || [ "$(cat "$PODMAN_CONF")" != "$PODMAN_CONF_TEXT" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            say "podman needs $PODMAN_CONF (runc, lower default ulimits, netavark); run as root once"
            exit 1
        fi
        mkdir -p "$(dirname "$PODMAN_CONF")"
        printf '%s\n' "$PODMAN_CONF_TEXT" >"$PODMAN_CONF"
        say "wrote $PODMAN_CONF (runc, default ulimits, netavark)"
    fi
    # The bridge of podman's default CNI network, left by podman before it used netavark, holds
    # the default network's subnet (10.88.0.0/16): packets meant for netavark's bridge would go
    # there, and builds could not reach the mirrors. Removed when no container is attached.
    if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null 2>&1 && ip link show cni-podman0 >/dev/null 2>&1 \
        && [ -z "$(ip link show master cni-podman0 2>/dev/null)" ]; then
        ip link delete cni-podman0
        say "removed the unused CNI bridge cni-podman0 (podman uses netavark)"
    fi
}

# Starts `podman system service` on a socket of its own in DIR (so an engine the machine already
# runs is neither used nor stopped) and points DOCKER_HOST, hence docker-compose, at it.
start_podman_service() {
    local dir=$1 socket=$1/podman.sock
    podman system service --time=0 "unix://$socket" >"$dir/podman-service.log" 2>&1 &
    podman_service_pid=$!
    export DOCKER_HOST="unix://$socket"
    for _ in $(seq 100); do
        if curl -fsS --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; then
            say "podman $(podman --version | awk '{print $3}') serving the Docker API on $socket"
            return 0
        fi
        kill -0 "$podman_service_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$dir/podman-service.log" >&2
    say "podman system service did not start"
    exit 1
}

# Podman 4.3 schedules healthchecks with systemd timers; with no systemd they never run and
# `depends_on: condition: service_healthy` would wait forever. This loop runs them: every 2 s
# for a container that is not yet healthy, every 10 s for a healthy one (so one that breaks
# turns unhealthy).
start_healthcheck_loop() {
    local project=$1
    (
        tick=0
        while :; do
            podman ps --filter "label=com.docker.compose.project=$project" \
                --format '{{.ID}} {{.Status}}' 2>/dev/null | while read -r id status; do
                case "$status" in
                    *"(healthy)"*) [ $((tick % 5)) -eq 0 ] || continue ;;
                    *"(starting)"* | *"(unhealthy)"*) ;;
                    *) continue ;;
                esac
                podman healthcheck run "$id" >/dev/null 2>&1 || true
            done
            tick=$((tick + 1))
            sleep 2
        done
    ) </dev/null >/dev/null 2>&1 &
    healthcheck_loop_pid=$!
}

stop_container_helpers() {
    if [ -n "$healthcheck_loop_pid" ]; then
        kill "$healthcheck_loop_pid" 2>/dev/null || true
        wait "$healthcheck_loop_pid" 2>/dev/null || true
        healthcheck_loop_pid=""
    fi
    if [ -n "$podman_service_pid" ]; then
        kill "$podman_service_pid" 2>/dev/null || true
        wait "$podman_service_pid" 2>/dev/null || true
        podman_service_pid=""
    fi
}

# The Debian mirrors apt already uses on this machine (deb.debian.org when none is found): a
# machine that reaches only its own mirror builds the images all the same.
debian_mirror() {
    local kind=$1 url
    url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null | grep -oE 'https?://[^ ]+' | grep -E "/debian${kind}/?\$" | head -1)
    echo "${url:-http://deb.debian.org/debian$kind}"
}

# debian:bookworm-slim from debootstrap, trimmed and set up as the official image is: apt
# sources for bookworm, -updates and -security; no documentation installed; apt's caches
# cleaned after each install.
make_debian_image() {
    local image=$1 root mirror security
    command -v debootstrap >/dev/null 2>&1 || { say "debootstrap is needed to make $image"; exit 1; }
    mirror=$(debian_mirror "")
    security=$(debian_mirror "-security")
    root=$(mktemp -d /tmp/latchkey-debian-root.XXXXXX)
    say "making $image with debootstrap from $mirror (about a minute)"
    if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1; then
        tail -20 "$root.log" >&2
        rm -rf "$root" "$root.log"
        say "debootstrap failed"
        exit 1
    fi
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
        "$root"/var/cache/debconf/*-old
    tar --numeric-owner -C "$root" -c . | podman import --quiet --change 'CMD ["bash"]' - "$image" >/dev/null
    rm -rf "$root" "$root.log"
}

# IMAGE DIR: builds the stand-in in scripts/containers/DIR and tags it IMAGE. The context also
# holds the certificate authorities this machine adds to Debian's (/usr/local/share/
# ca-certificates): where egress goes through a TLS-inspecting proxy, cargo in the rust
# stand-in must trust what the host's cargo trusts. They are public certificates, and only the
# local stand-in carries them, never the project's image.
make_stand_in_image() {
    local image=$1 dir=$2 context
    context=$(mktemp -d /tmp/latchkey-image-context.XXXXXX)
    cp -r "$CONTAINERS_DIR/$dir/." "$context/"
    mkdir -p "$context/extra-ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$context/extra-ca-certificates/" 2>/dev/null || true
    say "making $image from scripts/containers/$dir (Debian packages)"
    if ! podman build --format docker -t "$image" "$context" >"$context.log" 2>&1; then
        tail -30 "$context.log" >&2
        rm -rf "$context" "$context.log"
        say "building $image failed"
        exit 1
    fi
    rm -rf "$context" "$context.log"
}

# The base images the Dockerfile and docker-compose.yml name, each made here only when the
# machine has no image of that name.
ensure_base_images() {
    local rust_tag=$1 image
    image=docker.io/library/debian:bookworm-slim
    podman image exists "$image" || make_debian_image "$image"
    image=docker.io/library/rust:$rust_tag
    podman image exists "$image" || make_stand_in_image "$image" rust
    image=docker.io/library/postgres:15
    podman image exists "$image" || make_stand_in_image "$image" postgres
    image=docker.io/library/redis:7
    podman image exists "$image" || make_stand_in_image "$image" redis
}
