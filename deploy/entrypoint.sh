#!/bin/sh
# The image's entrypoint (deploy/Dockerfile). Secrets given as files (Docker and compose
# secrets, Kubernetes secret volumes) become the variables llmos reads; then the command
# is exec'd, so it is PID 1 and gets `docker stop`'s SIGTERM itself.
#   LLMOS_TOKEN_FILE          -> LLMOS_TOKEN           the admin token
#   LLMOS_KEY_FILE            -> LLMOS_KEY             the master key of encryption at rest
#   LLMOS_DEVICE_API_KEY_FILE -> LLMOS_DEVICE_API_KEY  the key of an OpenAI-compatible device
# Arguments that start with '-' are options of `llmos up` (docker run IMAGE --device mock).
set -eu

PLACEHOLDER="REPLACE-WITH-A-LONG-RANDOM-TOKEN"  # deploy/k8s/base/secret.yaml's value

fail() {
    echo "llmos-entrypoint: $1" >&2
    exit "$2"
}

for name in LLMOS_TOKEN LLMOS_KEY LLMOS_DEVICE_API_KEY; do
    eval "file=\${${name}_FILE:-}"
    [ -n "$file" ] || continue
    eval "given=\${${name}:-}"
    [ -z "$given" ] || fail "set $name or ${name}_FILE, not both" 64
    [ -f "$file" ] && [ -r "$file" ] || fail "${name}_FILE: cannot read $file" 66
    value=$(cat "$file")  # $(...) drops the trailing newline(s) an editor or echo leaves
    [ -n "$value" ] || fail "${name}_FILE: $file is empty" 65
    export "$name=$value"
    unset "${name}_FILE"
done

# LLMOS_TOKEN may have any form, so an unedited manifest would start a kernel whose
# admin token is public: refuse it.
[ "${LLMOS_TOKEN:-}" != "$PLACEHOLDER" ] ||
    fail "LLMOS_TOKEN is still the placeholder $PLACEHOLDER: put a random token in the secret" 65

if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    # Inside a container the kernel listens on all of the container's interfaces: the
    # published port (docker -p 127.0.0.1:8710:8710) or a Service decides who reaches it.
    set -- llmos up --host 0.0.0.0 --port 8710 "$@"
fi
exec "$@"
