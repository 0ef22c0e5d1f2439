#!/bin/sh
# Test Kitchen's shell verifier, where InSpec cannot be installed: the checks of the InSpec
# profile of this suite (tests/kitchen/integration/*/controls), run on the instance as root
# over SSH. Kitchen gives the instance's address, port, user and key in the environment.
set -eu
case "$KITCHEN_SUITE" in
  primary) checks=primary.sh ;;
  *) checks=untouched.sh ;;
esac
here=$(dirname "$0")
cat "$here/lib.sh" "$here/$checks" | ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -i "$KITCHEN_SSH_KEY" -p "$KITCHEN_PORT" \
  "$KITCHEN_USERNAME@$KITCHEN_HOSTNAME" sudo sh -s
