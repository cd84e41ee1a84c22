#!/bin/sh
# official-ids.sh USER UID GID: give USER, and its group of the same name, the ids the
# official image gives them, and hand over every file they owned. Debian's packages make
# their users with the next free system ids; the Kubernetes manifests run each server as
# the official image's (runAsUser, runAsGroup, fsGroup). Fails if another user or group
# has those ids already.
set -eu
user=$1 uid=$2 gid=$3
old_uid=$(id -u "$user")
old_gid=$(getent group "$user" | cut -d: -f3)
if [ "$old_gid" != "$gid" ]; then
    groupmod --gid "$gid" "$user"
    find / -xdev -gid "$old_gid" -exec chgrp --no-dereference "$gid" {} +
fi
if [ "$old_uid" != "$uid" ]; then
    usermod --uid "$uid" --gid "$gid" "$user"
    find / -xdev -uid "$old_uid" -exec chown --no-dereference "$uid" {} +
fi
[ "$(id -u "$user"):$(id -g "$user")" = "$uid:$gid" ]
