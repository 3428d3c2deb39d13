#!/usr/bin/env bash
# Start a Docker daemon for the container tests unless one already answers. Its data and exec roots live in a
# new temporary folder, printed on stdout (the daemon's pid is in FOLDER/dockerd.pid, its log in
# FOLDER/dockerd.log). Containers use the host's network (the tests run them with network_mode=host), so the
# daemon makes no bridge and leaves iptables alone. Needs root. DOCKER_HOST=unix:///path picks the socket.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
root="$(mktemp -d "${TMPDIR:-/tmp}/kale-dockerd.XXXXXX")"
socket=()
if [ -n "${DOCKER_HOST:-}" ]; then
    socket=(-H "$DOCKER_HOST")
fi
nohup dockerd --data-root "$root/data" --exec-root "$root/exec" --pidfile "$root/dockerd.pid" "${socket[@]}" \
    --bridge=none --iptables=false --ip6tables=false >"$root/dockerd.log" 2>&1 &
for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
        echo "$root"
        exit 0
    fi
    sleep 1
done
echo "dockerd did not answer within 60 s:" >&2
tail -20 "$root/dockerd.log" >&2
exit 1
