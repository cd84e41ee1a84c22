#!/bin/sh
# What the official image's entrypoint does, in short: on first start (an empty data
# directory) initdb with POSTGRES_USER as superuser and POSTGRES_PASSWORD, password
# logins over TCP, POSTGRES_DB created by a socket-only server; then postgres as the
# postgres user, listening on all interfaces.
set -e
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ "$1" = "postgres" ] && [ "$(id -u)" = "0" ]; then
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
        user=${POSTGRES_USER:-postgres}
        database=${POSTGRES_DB:-$user}
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        chown postgres "$pwfile"
        as_postgres initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
            --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
        rm -f "$pwfile"
        echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
        as_postgres pg_ctl --silent --wait -o "-c listen_addresses=''" start
        if [ "$database" != "postgres" ]; then
            echo 'CREATE DATABASE :"db"' | as_postgres psql --quiet --username="$user" \
                --dbname=postgres --set=ON_ERROR_STOP=1 --set=db="$database"
        fi
        as_postgres pg_ctl --silent --wait --mode=fast stop
        echo "stand-in entrypoint: initialized $PGDATA for $user, database $database"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$@" -c listen_addresses='*'
fi
exec "$@"
