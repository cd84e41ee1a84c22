#!/bin/sh
# What the official image's entrypoint does, in short: started as root, it makes the
# data directory the postgres user's and runs itself again as that user; started as
# another user (Kubernetes' runAsUser), it goes on as that user. On first start (an
# empty data directory) initdb with POSTGRES_USER as superuser and POSTGRES_PASSWORD,
# password logins over TCP, POSTGRES_DB created by a socket-only server; then postgres,
# listening on all interfaces.
set -e
if [ "$1" = "postgres" ]; then
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA" || :
    if [ "$(id -u)" = "0" ]; then
        find "$PGDATA" /var/run/postgresql ! -user postgres -exec chown postgres {} +
        exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
    fi
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
        user=${POSTGRES_USER:-postgres}
        database=${POSTGRES_DB:-$user}
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
            --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
        rm -f "$pwfile"
        echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
        pg_ctl --silent --wait -o "-c listen_addresses=''" start
        if [ "$database" != "postgres" ]; then
            echo 'CREATE DATABASE :"db"' | psql --quiet --username="$user" \
                --dbname=postgres --set=ON_ERROR_STOP=1 --set=db="$database"
        fi
        pg_ctl --silent --wait --mode=fast stop
        echo "stand-in entrypoint: initialized $PGDATA for $user, database $database"
    fi
    exec "$@" -c listen_addresses='*'
fi
exec "$@"
