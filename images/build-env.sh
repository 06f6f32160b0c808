# shellcheck shell=bash
# torchrig build helper: sourced (`. /usr/local/lib/torchrig/build-env.sh`) at the start of every RUN that
# downloads, with `torchrig_build_done` at its end. Not meant to be run by hand.
#
# Why: docker-py has no BuildKit, so no build secrets and no RUN --mount. torchrig serves the CA bundle (and a
# wheelhouse) from a file server on the host's 127.0.0.1 for the length of one build; build containers use the
# host's network, and FTP_PROXY carries the server's address. FTP_PROXY is one of Docker's predefined build
# args: the only channel into a RUN step that is neither part of the layer-cache key nor recorded in
# `docker history` (so a new port and token per build neither rebuilds layers nor leaks into the image). Nothing
# here downloads over FTP, so taking that variable over has no other effect. The CA is fetched into /tmp, used
# by pip/apt/curl in the same RUN, and deleted before the layer is committed.
#
# Identical rebuilds: `torchrig_build_done` sets every file this RUN created or changed to one fixed time (and
# pip's bytecode is compiled after that, against it), so two builds of the same inputs give the same layer
# contents. The time is a constant, not the commit's: a build arg that changed with every commit would rebuild
# every layer, torch's included; the commit's time goes into the org.opencontainers.image.created label instead.
# Scratch files live where this RUN's user may reset the times: /tmp for root, $HOME for the image's user (its
# changes to the root-owned /tmp could not be undone).

export SOURCE_DATE_EPOCH=315532800  # 1980-01-01, the zip epoch; also what useradd writes into /etc/shadow
if [ "$(id -u)" = 0 ]; then TORCHRIG_SCRATCH=/tmp; else TORCHRIG_SCRATCH="${HOME:?}"; fi
TORCHRIG_MARK="$TORCHRIG_SCRATCH/.torchrig-build-start"
: > "$TORCHRIG_MARK"
TORCHRIG_TOOLS="$TORCHRIG_SCRATCH/.torchrig-build-tools"
export TMPDIR="$TORCHRIG_SCRATCH/.torchrig-build-tmp"
mkdir -p "$TMPDIR"
TORCHRIG_CA_FILE="${TORCHRIG_CA_FILE:-$TORCHRIG_SCRATCH/.torchrig-build-ca.pem}"
TORCHRIG_APT_CONF="${TORCHRIG_APT_CONF:-/etc/apt/apt.conf.d/99torchrig-build-ca}"
_torchrig_server="${FTP_PROXY:-}"
unset FTP_PROXY ftp_proxy
# The file server is on 127.0.0.1: never send that through a proxy the user configured for the build.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

torchrig_fetch() {  # URL DEST: python3, curl or wget, whichever the base has (CUDA bases have no python3 yet)
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import shutil, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)' "$1" "$2"
    elif command -v curl >/dev/null 2>&1; then
        curl -fsS --noproxy '*' -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q --no-proxy -O "$2" "$1"
    else
        echo "torchrig: the base image has none of python3, curl, wget to fetch the build files with" >&2
        return 1
    fi
}

TORCHRIG_SERVED=""
if [ -n "$_torchrig_server" ]; then
    if ! TORCHRIG_SERVED="$(torchrig_fetch "${_torchrig_server}manifest" /dev/stdout)"; then
        echo "torchrig: cannot reach torchrig's build file server on the host's 127.0.0.1. The build must run" \
             "on a Docker engine on this machine (DOCKER_HOST is a remote engine, or Docker Desktop's VM?)." >&2
        exit 1
    fi
fi

case " $TORCHRIG_SERVED " in
    *" ca "*)
        torchrig_fetch "${_torchrig_server}ca.pem" "$TORCHRIG_CA_FILE"
        export PIP_CERT="$TORCHRIG_CA_FILE" REQUESTS_CA_BUNDLE="$TORCHRIG_CA_FILE" \
               SSL_CERT_FILE="$TORCHRIG_CA_FILE" CURL_CA_BUNDLE="$TORCHRIG_CA_FILE"
        if [ -w "$(dirname "$TORCHRIG_APT_CONF")" ]; then
            echo "Acquire::https::CAInfo \"$TORCHRIG_CA_FILE\";" > "$TORCHRIG_APT_CONF"
        fi
        ;;
esac

case " $TORCHRIG_SERVED " in
    *" wheels "*) export PIP_NO_INDEX=1 PIP_FIND_LINKS="${_torchrig_server}wheels/" ;;
    *)
        if [ "${TORCHRIG_PIP_SOURCE:-index}" = wheelhouse ]; then
            echo "torchrig: this build installs from a wheelhouse, but no wheelhouse is being served" >&2
            exit 1
        fi
        ;;
esac

torchrig_uv() {  # UV_PINS: print the path of a uv installed from UV_PINS (hash-checked, from PyPI or the
    # wheelhouse) into the scratch folder; fail (the caller falls back to pip) when there is none to be had
    local pins="$1"
    grep -q '^uv==' "$pins" 2>/dev/null || return 1
    if [ ! -x "$TORCHRIG_TOOLS/bin/uv" ]; then
        python3 -m pip install --no-cache-dir --no-compile --quiet --target "$TORCHRIG_TOOLS" \
            --index-url https://pypi.org/simple --require-hashes --no-deps -r "$pins" >&2 || return 1
    fi
    echo "$TORCHRIG_TOOLS/bin/uv"
}

torchrig_pip_install() {  # REQUIREMENTS [INSTALLER ARGS...]: from the environment's index (or the wheelhouse)
    # A lock (every line NAME==VERSION --hash=...) is installed by uv when /etc/torchrig/uv.txt pins one: parallel
    # downloads, every file hash-checked, --no-deps (the lock holds every dependency). Otherwise, or when uv cannot
    # be had, pip. Either way the bytecode is compiled after the file times are fixed (torchrig_compile).
    local file="$1" args uv
    shift
    grep -q '^[^#[:space:]]' "$file" || return 0  # nothing to install (an environment without extras)
    args=(--index-url "${TORCHRIG_INDEX_URL:?}")
    for url in ${TORCHRIG_EXTRA_INDEX_URLS:-}; do args+=(--extra-index-url "$url"); done
    if grep -q -- '--hash=' "$file"; then
        args+=(--require-hashes --no-deps)
        if uv="$(torchrig_uv /etc/torchrig/uv.txt)"; then
            echo "torchrig: installing the lock with $("$uv" --version)" >&2
            if [ -n "${PIP_FIND_LINKS:-}" ]; then args=(--no-index --find-links "$PIP_FIND_LINKS" --require-hashes \
                                                        --no-deps); fi
            # unsafe-best-match: a pinned file is taken from whichever index has it, as pip does
            "$uv" pip install --python "$(command -v python)" --no-cache --no-config --index-strategy \
                unsafe-best-match "${args[@]}" "$@" -r "$file"
            torchrig_compile
            return
        fi
        echo "torchrig: no uv for this build (no locks/uv.txt, or it could not be fetched): installing with pip" >&2
    fi
    pip install --no-cache-dir --no-compile "${args[@]}" "$@" -r "$file"
    torchrig_compile
}

torchrig_normalize_times() {  # every file this RUN created or changed gets the fixed time
    find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -cnewer "$TORCHRIG_MARK" \
        ! -path "$TORCHRIG_MARK" ! -path /etc/hosts ! -path /etc/hostname ! -path /etc/resolv.conf -print0 \
        2>/dev/null | xargs -0 -r touch -h -d "@$SOURCE_DATE_EPOCH" 2>/dev/null || true
}

torchrig_compile() {  # bytecode for what was just installed: timestamp pycs recording the fixed time
    torchrig_normalize_times
    python -m compileall -q -j 0 --invalidation-mode timestamp "$(python -c 'import sysconfig
print(sysconfig.get_path("purelib"))')" >/dev/null
}

torchrig_build_done() {  # end of every RUN that sourced this file: nothing of the above stays in the layer
    rm -f "$TORCHRIG_CA_FILE" "$TORCHRIG_APT_CONF"
    rm -rf "$TMPDIR" "$TORCHRIG_TOOLS" "${HOME:-/nonexistent}/.cache/pip" 2>/dev/null || true
    torchrig_normalize_times
    rm -f "$TORCHRIG_MARK"
    touch -h -d "@$SOURCE_DATE_EPOCH" "$TORCHRIG_SCRATCH" 2>/dev/null || true
}
