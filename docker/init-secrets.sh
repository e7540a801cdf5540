#!/usr/bin/env bash
# Create the compose stack's secrets once: docker/.env (values ChirpStack's config needs in clear) and
# docker/secrets/* (files mounted under /run/secrets). Existing files are kept.
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets

hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

[ -s secrets/ns_kek ] || hex 16 > secrets/ns_kek
[ -s secrets/ns_token ] || hex 32 > secrets/ns_token
# Filled in after the first start (see docs/chirpstack.md, section "docker/"); empty until then.
for name in bridge_api_key chirpstack_api_token astk appserver_lbi_token; do
    [ -e "secrets/$name" ] || : > "secrets/$name"
done
if [ ! -s .env ]; then
    {
        echo "JS_BEARER_TOKEN=$(cat secrets/ns_token)"
        echo "NS_KEK_HEX=$(cat secrets/ns_kek)"
        echo "CHIRPSTACK_API_SECRET=$(hex 32)"
    } > .env
fi
# Compose mounts these files as they are: the containers' unprivileged user must read them, so the files
# are world-readable and the directory (0700) keeps other host users out.
chmod 700 secrets
chmod 644 secrets/*
echo "secrets in $(pwd)/secrets and $(pwd)/.env"
