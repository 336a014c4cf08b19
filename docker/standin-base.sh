#!/usr/bin/env bash
# STAND-IN BASE IMAGE, NOT python:3.11-slim-bookworm.
#
# For machines that cannot pull from an image registry: builds a local image that plays the part
# of the official python:3.11-slim-bookworm base, so the Dockerfile can be built and checked there:
#   docker/standin-base.sh                    # -> localhost/python-standin:3.11-slim-bookworm
#   BASE=localhost/python-standin:3.11-slim-bookworm docker/check.sh
# What it is: Debian bookworm (debootstrap, minbase) with Debian's own python3.11, made the default
# python by a venv at /usr/local (python, python3, pip on PATH there, as in the official image).
# What differs from the official image: Debian's Python build (3.11.2) instead of python.org's
# latest 3.11, Debian's pip, the host's added CA certificates (/usr/local/share/ca-certificates,
# or EXTRA_CA_DIR) with PIP_CERT pointing at the system bundle, and no image metadata beyond PATH,
# LANG and CMD. Use the real base wherever a registry is reachable; images built on this one are
# for checking only.
# Needs root (debootstrap, chroot), debootstrap and podman or docker. Arguments: [TAG].
set -euo pipefail

TAG=${1:-localhost/python-standin:3.11-slim-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ENGINE=${ENGINE:-podman}

if [ "$(id -u)" != 0 ]; then
  echo "standin-base.sh: needs root (debootstrap and chroot)" >&2
  exit 2
fi
for tool in debootstrap "$ENGINE"; do
  command -v "$tool" >/dev/null || { echo "standin-base.sh: $tool not found (apt-get install $tool)" >&2; exit 2; }
done

root=$(mktemp -d /var/tmp/python-standin.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$MIRROR"
# The official image's sources include the security updates; so do ours.
cat >"$root/etc/apt/sources.list" <<LIST
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
LIST
# apt, not debootstrap --include, resolves python3.11-venv's dependencies (python3.11-distutils).
chroot "$root" apt-get update -q
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends \
  python3.11 python3.11-venv ca-certificates
# The host's own added CA certificates (a TLS-intercepting proxy's, say): pip in builds on this
# image then trusts what the host trusts. Pip reads the system bundle through PIP_CERT below.
if compgen -G "${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}/*.crt" >/dev/null; then
  cp "${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates
fi
chroot "$root" /usr/bin/python3.11 -m venv /usr/local
chroot "$root" /usr/local/bin/python -c "import sys, ssl, sqlite3; assert sys.prefix == '/usr/local', sys.prefix"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | "$ENGINE" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'LABEL org.opencontainers.image.description="STAND-IN for python:3.11-slim-bookworm (docker/standin-base.sh)"' \
  --change 'CMD ["python3"]' \
  - "$TAG"
echo "standin-base.sh: built $TAG (a stand-in, not the official python image)"
