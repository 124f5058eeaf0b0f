#!/usr/bin/env bash
# Install the Debian packages the test tiers drive (skopeo, umoci, docker, containerd, CNCF distribution, chromium),
# and debootstrap, which makes the image tier's stand-in for the python base image.
# Idempotent: apt is not touched at all when every package is already installed.
set -euo pipefail

PACKAGES=(skopeo umoci docker.io containerd docker-registry debootstrap chromium chromium-driver)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-tools: all present (${PACKAGES[*]})"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-tools: missing ${missing[*]} and not root; run: sudo $0" >&2
    exit 1
fi

echo "install-tools: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
