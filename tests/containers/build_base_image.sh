#!/usr/bin/env bash
# Build the local image `python:3.11` that the container tests run Kubeflow steps on: a Debian bookworm root
# with Python 3.11 and pip and nothing else, like the official image, made with debootstrap and imported into
# the Docker daemon (nothing is ever pulled from an image registry). Does nothing when the image exists.
# Usage: tests/containers/build_base_image.sh [IMAGE]   (needs root, debootstrap and a running dockerd)
set -euo pipefail
image="${1:-python:3.11}"
if docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi
root="$(mktemp -d "${TMPDIR:-/tmp}/kale-base-root.XXXXXX")"
log="$root.log"
trap 'rm -rf "$root" "$log"' EXIT
echo "building the base image $image with debootstrap (a few minutes, once)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED        # pip installs system-wide, as in the official image
ln -sf python3 "$root/usr/bin/python"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"  # pip trusts what this machine trusts
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$image" >/dev/null
