#!/usr/bin/env bash
# Install the Debian packages the lab, the demo and the tests need, if any is missing.
set -euo pipefail

packages=(
  postgresql-15 postgresql-client-15 postgresql-contrib  # servers and pg_basebackup
  barman barman-cli                                       # the backup host
  barman-cli-cloud python3-boto3                          # barman:cloud (barman-cloud-*)
  cron                                                    # crontab for `barman cron`
  prometheus                                              # promtool: check and test the alert rules
  iproute2 util-linux procps                              # ip netns, nsenter/unshare, ps
  systemd-container mmdebstrap apt-utils                  # booted lab hosts: nspawn, images, apt-ftparchive
  python3-venv make
  git                                                     # the local formula repository that the lab's gitfs serves
  python3-dev libpq-dev gcc                               # barman.install.method pip (psycopg2 build)
  vagrant                                                 # `vagrant validate` of the Vagrantfile
  vagrant-lxc lxc dnsmasq-base rsync                      # `vagrant up --provider=lxc` (tests/integration/test_vagrant.py)
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
