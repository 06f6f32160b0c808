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

TORCHRIG_CA_FILE="${TORCHRIG_CA_FILE:-/tmp/torchrig-build-ca.pem}"
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

torchrig_pip_install() {  # REQUIREMENTS [PIP ARGS...]: from the environment's index (or the wheelhouse)
    local file="$1" args
    shift
    grep -q '^[^#[:space:]]' "$file" || return 0  # nothing to install (an environment without extras)
    args=(--no-cache-dir --index-url "${TORCHRIG_INDEX_URL:?}")
    for url in ${TORCHRIG_EXTRA_INDEX_URLS:-}; do args+=(--extra-index-url "$url"); done
    if grep -q -- '--hash=' "$file"; then args+=(--require-hashes --no-deps); fi  # a lock: every package pinned
    pip install "${args[@]}" "$@" -r "$file"
}

torchrig_build_done() {  # end of every RUN that sourced this file: nothing of the above stays in the layer
    rm -f "$TORCHRIG_CA_FILE" "$TORCHRIG_APT_CONF"
    rm -rf /tmp/pip-* "${HOME:-/nonexistent}/.cache/pip" 2>/dev/null || true
}
