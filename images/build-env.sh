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
# Identical rebuilds: `torchrig_build_done` sets every file this RUN created or changed to one fixed time, once
# at the end (the bytecode is checked-hash, so it does not depend on the times), so two builds of the same inputs
# give the same layer contents. The time is a constant, not the commit's: a build arg that changed with every commit would rebuild
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
        torchrig_time "fetch uv (pip)" python3 -m pip install --no-cache-dir --no-compile --quiet \
            --target "$TORCHRIG_TOOLS" --index-url https://pypi.org/simple --require-hashes --no-deps -r "$pins" >&2 \
            || return 1
    fi
    echo "$TORCHRIG_TOOLS/bin/uv"
}

torchrig_time() {  # LABEL COMMAND...: run COMMAND and say how long it took (build-bench reads these lines)
    local label="$1" t0 t1 rc=0
    shift
    t0="$(date +%s%N)"
    "$@" || rc=$?
    t1="$(date +%s%N)"
    printf 'torchrig-time: %s %d.%03d s\n' "$label" $(( (t1 - t0) / 1000000000 )) $(( (t1 - t0) / 1000000 % 1000 )) >&2
    return "$rc"
}

torchrig_install() {  # TORCH_REQS EXTRAS_REQS: the environment, from its index (or the wheelhouse), then compiled
    # A lock (every line NAME==VERSION --hash=...) is installed by uv when /etc/torchrig/uv.txt pins one: both
    # sections in one call (every download in parallel, as a hand-written `uv pip install -r` does), every file
    # hash-checked, --no-deps (the lock holds every dependency), then `uv pip check`. Otherwise, or when uv cannot
    # be had, pip: torch first, then the extras under the torch/torchvision pins (constraints.txt), then pip check.
    local torch_reqs="$1" extras_reqs="$2" args uv files=()
    args=(--index-url "${TORCHRIG_INDEX_URL:?}")
    for url in ${TORCHRIG_EXTRA_INDEX_URLS:-}; do args+=(--extra-index-url "$url"); done
    for f in "$torch_reqs" "$extras_reqs"; do
        if grep -q '^[^#[:space:]]' "$f"; then files+=(-r "$f"); fi  # an environment without extras has none
    done
    if grep -q -- '--hash=' "$torch_reqs" && uv="$(torchrig_uv /etc/torchrig/uv.txt)"; then
        echo "torchrig: installing the lock with $("$uv" --version)" >&2
        args+=(--require-hashes --no-deps)
        if [ -n "${PIP_FIND_LINKS:-}" ]; then args=(--no-index --find-links "$PIP_FIND_LINKS" --require-hashes \
                                                    --no-deps); fi
        # unsafe-best-match: a pinned file is taken from whichever index has it, as pip does
        args=(pip install --python "$(command -v python)" --no-cache --no-config --index-strategy unsafe-best-match
              "${args[@]}")
        torchrig_install_overlapped "$uv" "${args[@]}" -- "$torch_reqs" "$extras_reqs" || return 1
        torchrig_time "check (uv pip check)" "$uv" pip check --python "$(command -v python)" || return 1
        return 0
    else
        if grep -q -- '--hash=' "$torch_reqs"; then
            echo "torchrig: no uv for this build (no locks/uv.txt, or it could not be fetched): installing with pip" >&2
            args+=(--require-hashes --no-deps)
        fi
        torchrig_time "install torch (pip)" pip install --no-cache-dir --no-compile "${args[@]}" \
            -r "$torch_reqs" -c /etc/torchrig/constraints-torch.txt || return 1
        if [ "${#files[@]}" -gt 2 ]; then
            torchrig_time "install extras (pip)" pip install --no-cache-dir --no-compile "${args[@]}" \
                -r "$extras_reqs" -c /etc/torchrig/constraints.txt || return 1
        fi
        torchrig_time "check (pip check)" pip check || return 1
    fi
    torchrig_time "compile bytecode" torchrig_compile
}

torchrig_install_overlapped() {  # UV UV-ARGS... -- REQUIREMENTS...: install a lock, compiling while it downloads
    # Compiling ~10,000 files is CPU work a hand-written `uv pip install` does not do; downloading torch and its
    # CUDA/ROCm libraries (2-3 GB, few .py files) is network work. So the lock goes in two calls: everything but
    # the largest wheels first, then those in the background while the files already installed are compiled,
    # then the largest wheels' own files. (Two uv calls cannot share the venv at once: uv locks it.)
    local uv="$1" sp pid rc=0 first="$TMPDIR/lock-first.txt" last="$TMPDIR/lock-last.txt" uv_args=() paths=()
    shift
    while [ "$1" != -- ]; do uv_args+=("$1"); shift; done
    shift
    torchrig_split_lock "$first" "$last" "$@" || return 1
    sp="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    if [ -s "$first" ]; then
        torchrig_time "install (uv): all but the largest wheels" "$uv" "${uv_args[@]}" -r "$first" || return 1
    fi
    ls -A "$sp" > "$TMPDIR/installed-first"
    if [ -s "$last" ]; then
        "$uv" "${uv_args[@]}" -r "$last" > "$TMPDIR/uv-last.log" 2>&1 &
        pid=$!
    fi
    mapfile -t paths < <(sed "s|^|$sp/|" "$TMPDIR/installed-first")
    torchrig_time "compile bytecode, while the largest wheels download" torchrig_compile "${paths[@]}" || rc=$?
    if [ -n "${pid:-}" ]; then
        torchrig_time "install (uv): the largest wheels, waited for" wait "$pid" || rc=$?
        cat "$TMPDIR/uv-last.log" >&2
    fi
    [ "$rc" = 0 ] || return "$rc"
    mapfile -t paths < <(ls -A "$sp" | grep -vxF -f "$TMPDIR/installed-first" | sed "s|^|$sp/|")
    if [ "${#paths[@]}" -gt 0 ]; then
        torchrig_time "compile bytecode, the largest wheels" torchrig_compile "${paths[@]}" || return 1
    fi
}

torchrig_split_lock() {  # FIRST LAST REQUIREMENTS...: a lock's entries, one a line; the largest wheels' in LAST
    python - "$@" <<'PY'
import re, sys
first, last, *files = sys.argv[1:]
big = re.compile(r"(torch|torchvision|torchaudio|triton|pytorch-triton(-rocm)?|nvidia-[a-z0-9-]+)$")
out = {first: [], last: []}
for path in files:
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            name = re.split(r"[=<>!~;\[ ]", entry, maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")
            out[last if big.match(name) else first].append(entry)
for path, entries in out.items():
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(e + "\n" for e in entries))
PY
}

torchrig_normalize_times() {  # every file this RUN created or changed gets the fixed time
    find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -cnewer "$TORCHRIG_MARK" \
        ! -path "$TORCHRIG_MARK" ! -path /etc/hosts ! -path /etc/hostname ! -path /etc/resolv.conf -print0 \
        2>/dev/null | xargs -0 -r touch -h -d "@$SOURCE_DATE_EPOCH" 2>/dev/null || true
}

torchrig_compile() {  # [PATHS...]: bytecode for PATHS (default: the whole environment), on every core
    # checked-hash pycs record the source's hash, not its time: they hold whatever time the files get afterwards
    # (torchrig_build_done), and two builds write the same bytes (SOURCE_DATE_EPOCH also makes hash-based pycs
    # the default for any later compile). -f: pip's own files came with timestamp pycs from ensurepip.
    if [ "$#" = 0 ]; then set -- "$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"; fi
    python -m compileall -q -f -j 0 --invalidation-mode checked-hash "$@" >/dev/null
}

torchrig_build_done() {  # end of every RUN that sourced this file: nothing of the above stays in the layer
    rm -f "$TORCHRIG_CA_FILE" "$TORCHRIG_APT_CONF"
    rm -rf "$TMPDIR" "$TORCHRIG_TOOLS" "${HOME:-/nonexistent}/.cache/pip" 2>/dev/null || true
    torchrig_time "fix file times" torchrig_normalize_times
    rm -f "$TORCHRIG_MARK"
    touch -h -d "@$SOURCE_DATE_EPOCH" "$TORCHRIG_SCRATCH" 2>/dev/null || true
}
