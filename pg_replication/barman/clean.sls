# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# A backup host's clean: the formula's cron no longer runs `barman cron`, receive-wal stopped,
# the formula's Barman configuration and .pgpass removed. Barman's home (backups, WAL archive)
# and log directory stay, and so do the files of Barman's package: on Debian, the package's
# conffiles the formula had written over are the package's again (its cron file then runs
# `barman cron` over no server).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- from tplroot ~ "/barman/conffiles.jinja" import restore_conffiles, barman_installed with context %}
{%- set marker = 'Managed by Salt (pg_replication)' %}

pg_replication-barman-cron-clean:
  file.absent:
    - name: {{ pg.barman.cron_file }}

# What the formula once wrote into the package's cron file (a host never migrated).
pg_replication-barman-cron-legacy-clean:
  file.absent:
    - name: {{ pg.barman.package_cron_file }}
    - onlyif:
      - fun: file.contains
        path: {{ pg.barman.package_cron_file }}
        text: {{ marker | json }}

{%- for server in pg.barman_servers %}

pg_replication-barman-receive-wal-clean-{{ server.name }}:
  barman.receive_wal_stopped:
    - name: {{ server.name }}
    - require:
      - file: pg_replication-barman-cron-clean
      - file: pg_replication-barman-cron-legacy-clean
    - require_in:
      - file: pg_replication-barman-config-clean
{%- endfor %}

{%- if salt['cmd.has_exec']('crontab') %}

# Restore drills: their cron line and configuration (their results stay, in Barman's home;
# no scratch copy outlives a drill).
pg_replication-barman-drill-cron-clean:
  cron.absent:
    - name: barman.drill
    - identifier: pg_replication-barman-drill
    - user: root
    - require_in:
      - file: pg_replication-barman-config-clean
{%- endif %}

pg_replication-barman-config-clean:
  file.absent:
    - names:
{%- for server in pg.barman_servers + pg.barman.retired_servers %}
      - {{ pg.barman.config_dir }}/{{ server.name }}.conf
{%- endfor %}
      - {{ pg.barman.home }}/.pgpass
      - {{ pg.barman.home }}/pg_replication-drill/drill.json
      - {{ pg.barman.marker_hook }}
{%- if pg.cloud_credentials %}
      - {{ pg.cloud_credentials }}
      - {{ pg.barman.cloud.backup_hook }}
{%- endif %}
{%- if pg.ssh %}
      - {{ pg.ssh.forced_command }}

# standby:restore_from_barman: the servers' keys the formula authorized go (no client left).
pg_replication-barman-ssh-clients-clean:
  pg_replication.ssh_clients_authorized:
    - name: {{ pg.ssh.user }}
    - clients: []
    - options: []
    - mine: {{ pg.ssh.mine }}
{%- endif %}

# Barman's configuration file while it holds the formula's content (a second clean leaves the
# package's alone).
pg_replication-barman-config-file-clean:
  file.absent:
    - name: {{ pg.barman.config_file }}
    - onlyif:
      - fun: file.contains
        path: {{ pg.barman.config_file }}
        text: {{ marker | json }}
    - require:
      - file: pg_replication-barman-config-clean

{%- if pg.barman.install.method == 'pkg' and grains['os_family'] == 'Debian' %}

# The package's conffiles the formula removed are put back (see conffiles.jinja).
pg_replication-barman-package-files-clean:
  cmd.run:
    - name: {{ restore_conffiles | json }}
    - env:
        DEBIAN_FRONTEND: noninteractive
    - onlyif: {{ barman_installed | json }}
    - onchanges:
      - file: pg_replication-barman-cron-legacy-clean
      - file: pg_replication-barman-config-file-clean
{%- endif %}
