# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# A Barman backup server streaming from the primary: configured, checked, backed up.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set install = pg.barman.install %}
{%- from tplroot ~ "/barman/conffiles.jinja" import restore_conffiles, conffile_restorable with context %}

include:
  - {{ tplroot }}.psycopg2
  - .install
  - .dirs
  # Restore drills: their configuration, directory and cron line.
  - .drill
  # TLS: the CA its conninfo verifies the servers with.
  - {{ tplroot }}.tls
{%- if pg.ssh %}
  # standby:restore_from_barman: the servers fetch WAL with `barman get-wal` over SSH.
  - .ssh
{%- endif %}

{%- if pg.ssh_revoked %}

# standby:restore_from_barman off: the servers' keys the formula authorized go (none if it
# never was on).
pg_replication-barman-ssh-clients-revoked:
  pg_replication.ssh_clients_authorized:
    - name: {{ pg.ssh_revoked.user }}
    - clients: []
    - options: []
    - mine: {{ pg.ssh_revoked.mine }}
    - require:
      - sls: {{ tplroot }}.barman.install
{%- endif %}

pg_replication-barman-conf:
  file.managed:
    - name: {{ pg.barman.config_file }}
    - source: salt://{{ tplroot }}/barman/files/barman.conf.jinja
    - template: jinja
    - user: root
    - group: barman
    - mode: '0644'
    - context:
        tplroot: {{ tplroot }}
    - require:
      - sls: {{ tplroot }}.barman.install

pg_replication-barman-pgpass:
  file.managed:
    - name: {{ pg.barman.home }}/.pgpass
    - user: barman
    - group: barman
    - mode: '0600'
    - show_changes: False
    # Rendered on the minion: the passwords stay out of the state's arguments (lowstate).
    - source: salt://{{ tplroot }}/files/pgpass.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - require:
      - sls: {{ tplroot }}.barman.dirs
      # A server leaving the pillar is stopped (its slot dropped) with its password still here.
      - barman: pg_replication-barman-servers-follow-the-pillar

# `barman cron` every minute as the barman user (starts receive-wal, applies retention), and
# base backups of every server on the pillar's schedule, in a file of the formula's own:
# /etc/cron.d/barman is a conffile of Debian's barman package, left to the package. (A cron.d
# file name has no dot: Debian's cron skips such files.) Debian's file runs `barman -q cron`
# every minute too; the two runs are harmless: each server's `barman cron` holds Barman's
# server cron lock, and a second one finds it taken and skips the server, quietly (-q), as
# it does when starting archive-wal or receive-wal that already run (their own locks).
pg_replication-barman-cron:
  file.managed:
    - name: {{ pg.barman.cron_file }}
    - mode: '0644'
    - contents: |
        # Managed by Salt (pg_replication)
        MAILTO=root
        * * * * * barman {{ pg.barman.cron_test }} && {{ pg.barman.cron_command }}
{%- if pg.barman.backup_schedule %}
        {{ pg.barman.backup_schedule }} barman {{ pg.barman.cron_test }} && {{ pg.barman.backup_command }}
{%- endif %}
{%- for server in pg.barman_servers if server.incremental %}
        {{ pg.barman.incremental_schedule }} barman {{ pg.barman.cron_test }} && {{ server.incremental_command }}
{%- endfor %}
{%- for server in pg.barman_servers if server.cloud_retention_command %}
        {{ pg.barman.cloud.retention_schedule }} barman {{ server.cloud_retention_command }}
{%- endfor %}
    - require:
      - sls: {{ tplroot }}.barman.install

# Up to now the formula wrote its lines into /etc/cron.d/barman: that content goes once the
# formula's own file is in place (cron runs `barman cron` in every minute across the change).
pg_replication-barman-cron-legacy:
  file.absent:
    - name: {{ pg.barman.package_cron_file }}
    - onlyif:
      - fun: file.contains
        path: {{ pg.barman.package_cron_file }}
        text: '# Managed by Salt (pg_replication)'
    - require:
      - file: pg_replication-barman-cron

{%- if install.method == 'pkg' and grains['os_family'] == 'Debian' %}

# ...and Barman's package gets its conffile back (dpkg --force-confmiss on a reinstall of the
# version installed, from the package repository) when the formula's old content was there,
# or the file is missing (the formula's old clean removed it). An admin's own change stays.
pg_replication-barman-cron-package-file:
  cmd.run:
    - name: {{ restore_conffiles | json }}
    - env:
        DEBIAN_FRONTEND: noninteractive
    - onlyif: {{ conffile_restorable(pg.barman.package_cron_file) | json }}
    - require:
      - file: pg_replication-barman-cron-legacy
{%- endif %}

{%- if pg.cloud_credentials %}

# barman:cloud's key pair for the hook scripts (barman-cloud-*), rendered on the minion.
pg_replication-barman-cloud-credentials:
  file.managed:
    - name: {{ pg.cloud_credentials }}
    - user: barman
    - group: barman
    - mode: '0600'
    - show_changes: False
    - source: salt://{{ tplroot }}/files/cloud_credentials.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - require:
      - sls: {{ tplroot }}.barman.dirs
    - require_in:
{%-   for server in pg.barman_servers %}
      - file: pg_replication-barman-server-{{ server.name }}
{%-   endfor %}
{%- endif %}

{%- if pg.barman.cloud %}

# barman:cloud's post-backup hook: copies a backup once it is DONE (its WAL archived).
pg_replication-barman-cloud-backup-hook:
  file.managed:
    - name: {{ pg.barman.cloud.backup_hook }}
    - source: salt://{{ tplroot }}/barman/files/cloud-backup-hook.sh.jinja
    - template: jinja
    - makedirs: True
    - user: root
    - group: root
    - mode: '0755'
    - context:
        tplroot: {{ tplroot }}
    - require_in:
{%-   for server in pg.barman_servers %}
      - file: pg_replication-barman-server-{{ server.name }}
{%-   endfor %}
{%- endif %}

# Servers gone from the pillar: receive-wal stopped, slot dropped, file removed (backups stay).
pg_replication-barman-servers-follow-the-pillar:
  barman.servers_follow:
    - name: {{ pg.barman.config_dir }}
    - servers: {{ (pg.barman_servers + pg.barman.retired_servers) | map(attribute='name') | list | json }}
    - require:
      - file: pg_replication-barman-conf

{#- One server file of Barman's configuration directory: an active server's, or a retired one's. #}
{%- macro server_file(server) %}

pg_replication-barman-server-{{ server.name }}:
  file.managed:
    - name: {{ pg.barman.config_dir }}/{{ server.name }}.conf
    - source: salt://{{ tplroot }}/barman/files/server.conf.jinja
    - template: jinja
    - user: root
    - group: barman
    - mode: '0644'
    - context:
        tplroot: {{ tplroot }}
        server_name: {{ server.name | json }}
    - require:
      - sls: {{ tplroot }}.barman.dirs
{%- if pg.tls and not server.retired %}
      - sls: {{ tplroot }}.tls
{%- endif %}
{%- endmacro %}

{%- for server in pg.barman_servers %}
{{- server_file(server) }}

# A changed server file (its primary's address, TLS...) takes effect on receive-wal's next
# connection: a running receive-wal is restarted with it.
pg_replication-barman-reconnect-{{ server.name }}:
  barman.receive_wal_reconnected:
    - name: {{ server.name }}
    - timeout: {{ pg.barman.check_timeout }}
    - onchanges:
      - file: pg_replication-barman-server-{{ server.name }}
    - require:
      - file: pg_replication-barman-pgpass

# Streaming ready: slot, receive-wal and WAL archive OK (a backup may not exist yet).
pg_replication-barman-ready-{{ server.name }}:
  barman.check_ok:
    - name: {{ server.name }}
    - ignore:
      - minimum_redundancy_requirements
      - backup_maximum_age
    - timeout: {{ pg.barman.check_timeout }}
    - require:
      - sls: {{ tplroot }}.psycopg2
      - file: pg_replication-barman-server-{{ server.name }}
      - barman: pg_replication-barman-reconnect-{{ server.name }}
      - file: pg_replication-barman-pgpass
      - file: pg_replication-barman-conf

pg_replication-barman-backup-{{ server.name }}:
  barman.backup_fresh:
    - name: {{ server.name }}
    - max_age: {{ pg.barman.backup_max_age }}
    - require:
      - barman: pg_replication-barman-ready-{{ server.name }}

pg_replication-barman-check-{{ server.name }}:
  barman.check_ok:
    - name: {{ server.name }}
    - fix: False
    - require:
      - barman: pg_replication-barman-backup-{{ server.name }}
{%- if server.keep %}

# barman:keep: the backups Barman holds past its retention policy (`barman keep`).
pg_replication-barman-keep-{{ server.name }}:
  barman.kept:
    - name: {{ server.name }}
    - backups: {{ server.keep | json }}
    - require:
      - barman: pg_replication-barman-ready-{{ server.name }}
{%- endif %}
{%- endfor %}
{%- for server in pg.barman.retired_servers %}

# barman:retired: its receive-wal stopped while the server is still active (Barman refuses
# `receive-wal --stop` on an inactive one), then its file with active = false: its backups
# stay restorable. Its slot is left: the cluster's new server may stream on that name.
pg_replication-barman-retire-{{ server.name }}:
  barman.receive_wal_stopped:
    - name: {{ server.name }}
    - prereq:
      - file: pg_replication-barman-server-{{ server.name }}
{{- server_file(server) }}
{%- endfor %}
