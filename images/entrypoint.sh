#!/bin/sh
# torchrig's image entrypoint: gives a UID the image does not know a name, then runs the command.
#
# `docker run --user 4242 IMAGE` (or a Kubernetes runAsUser, or a host UID passed through) starts a process whose
# UID has no line in /etc/passwd: `whoami` and `id -un` fail, Python's getpass.getuser() raises (torch's inductor
# calls it for its cache directory: pytorch#140765), and HOME is "/", where nothing can be written. As
# jupyter/docker-stacks' start.sh does, /etc/passwd is writable by the root group (GID 0, what `--user UID`
# without a group gives; the build disabled `su`, so an added line grants nothing), and a missing entry is
# appended here -- named torchrig, with a writable home -- before the command runs. Nothing is printed on stdout
# (callers parse it), and the command is exec'd, so signals and the exit code are its own.
if ! id -un >/dev/null 2>&1; then
    uid="$(id -u)"
    gid="$(id -g)"
    home="${HOME:-/}"
    if [ "$home" = / ] || ! [ -w "$home" ]; then
        home=/tmp
        export HOME=/tmp
    fi
    if [ -w /etc/passwd ]; then
        # not sed -i: it writes a temporary file beside /etc/passwd, in a directory this UID cannot write
        printf 'torchrig:x:%s:%s:torchrig (UID %s, added at start):%s:/bin/bash\n' "$uid" "$gid" "$uid" "$home" \
            >> /etc/passwd
    elif [ -z "${USER:-}${LOGNAME:-}" ]; then
        echo "torchrig: UID $uid has no name in this image and /etc/passwd is writable only by group 0:" \
             "run with --user $uid:0 (or set USER) so whoami and getpass.getuser() work" >&2
    fi
    unset uid gid home
fi
exec "$@"
