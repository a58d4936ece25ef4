#!/usr/bin/env bash
# A Docker engine, a registry, the local Lambda base image and a wheelhouse for the container tests and
# for trying `facerec bootstrap --registry ...` or `facerec run-local --runtime containers` on a machine
# without Docker or without a package index (this project's machines and CI).
#
# As root: installs docker.io, docker-registry and busybox-static with apt-get when missing, starts a
# private dockerd (vfs storage, no iptables, no bridge: run containers with --network host) on its own
# unix socket and a registry on 127.0.0.1:<free port>, builds the base image (this machine's Python,
# pip, awslambdaric and the Lambda Runtime Interface Emulator, laid out like
# public.ecr.aws/lambda/python:3.12), serves the images' wheels on 127.0.0.1, writes the exports to
# WORKDIR/env.sh, and keeps running until Ctrl-C or SIGTERM, which stop everything it started.
#
#   scripts/docker-up.sh [WORKDIR] &        # default WORKDIR: /tmp/facerec-docker
#   . /tmp/facerec-docker/env.sh            # DOCKER_HOST, FACEREC_TEST_REGISTRY, FACEREC_TEST_BASE_IMAGE,
#                                           # FACEREC_IMAGE_BUILD_ARGS, FACEREC_IMAGE_BUILD_NETWORK
#   python -m pytest tests/test_containers.py -q    # uses them instead of starting its own
#   facerec run-local clip.mp4 --gallery G --runtime containers --base-image "$FACEREC_TEST_BASE_IMAGE"
#
# The tests do the same by themselves (tests/docker_env.py); this script only keeps it running.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m tests.docker_env up "${1:-/tmp/facerec-docker}"
