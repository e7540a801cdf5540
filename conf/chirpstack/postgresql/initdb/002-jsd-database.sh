#!/bin/bash
# The Join Server's own database and role, beside ChirpStack's (jsd migrates its schema at start).
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname="$POSTGRES_DB" <<-EOSQL
    create role jsd login password 'jsd';
    create database jsd owner jsd;
EOSQL
