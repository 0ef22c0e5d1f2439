# Shared by the checks: verify.sh sends this file, then the suite's checks, to one shell.
set -u
failed=0
check() {
  what=$1
  shift
  if "$@" >/dev/null 2>&1; then echo "ok   $what"; else echo "FAIL $what"; failed=1; fi
}
