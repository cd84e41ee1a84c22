#!/bin/sh
# As the official image's entrypoint: a RabbitMQ command started as root runs as the
# rabbitmq user, and the server first takes over whatever in its data directory is not
# its own. Commands run later in the container (`exec`, healthchecks) do not pass here:
# they run as the container's user.
set -e
case "$1" in
    rabbitmq*)
        if [ "$(id -u)" = "0" ]; then
            if [ "$1" = "rabbitmq-server" ]; then
                find /var/lib/rabbitmq ! -user rabbitmq -exec chown rabbitmq {} +
            fi
            exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$0" "$@"
        fi
        ;;
esac
exec "$@"
