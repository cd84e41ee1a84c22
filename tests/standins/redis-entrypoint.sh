#!/bin/sh
# As the official image's entrypoint: redis-server (also given only its options) runs as
# the redis user, owning its data directory; any other command runs as given.
set -e
if [ "${1#-}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = "redis-server" ] && [ "$(id -u)" = "0" ]; then
    chown -R redis:redis /data
    # Without a config file, Debian's build listens on all interfaces as the official one does.
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
