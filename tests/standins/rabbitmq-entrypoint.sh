#!/bin/sh
# The data volume belongs to the rabbitmq user, whom Debian's rabbitmq-server and
# rabbitmq-diagnostics wrappers switch to when started as root.
set -e
if [ "$(id -u)" = "0" ]; then
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
fi
exec "$@"
