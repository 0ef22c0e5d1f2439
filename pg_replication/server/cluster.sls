# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# The data directory: initialised on the primary, a pg_basebackup copy on a standby.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - {{ tplroot }}.psycopg2
  - {{ tplroot }}.tls
  - .guard
  - .package

{%- if pg.conf_dir != pg.data_dir %}
pg_replication-conf-dir:
  file.directory:
    - name: {{ pg.conf_dir }}
    - user: postgres
    - group: postgres
    - mode: '0755'
    - makedirs: True
    - require:
      - sls: {{ tplroot }}.server.package
{%- endif %}

# The replication role's password for every other server of the cluster (streaming, and
# pg_rewind after a switchover).
pg_replication-pgpass:
  file.managed:
    - name: {{ pg.home }}/.pgpass
    - user: postgres
    - group: postgres
    - mode: '0600'
    - show_changes: False
    # Rendered on the minion: the passwords stay out of the state's arguments (lowstate).
    - source: salt://{{ tplroot }}/files/pgpass.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - require:
      - sls: {{ tplroot }}.server.package

{%- if pg.cloud_credentials %}

# standby:restore_from_cloud: barman:cloud's key pair for restore_command, on every server
# (a switchover makes a primary a standby).
pg_replication-cloud-credentials:
  file.managed:
    - name: {{ pg.cloud_credentials }}
    - user: postgres
    - group: postgres
    - mode: '0600'
    - show_changes: False
    - source: salt://{{ tplroot }}/files/cloud_credentials.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - require:
      - sls: {{ tplroot }}.server.package
{%- endif %}

{%- if pg.role == 'primary' %}
pg_replication-data-dir:
  file.directory:
    - name: {{ pg.data_dir }}
    - user: postgres
    - group: postgres
    - mode: '0700'
    - makedirs: True
    - require:
      - sls: {{ tplroot }}.server.package

pg_replication-initdb:
  pg_replication.cluster_initialized:
    - name: {{ pg.data_dir }}
    - initdb: {{ pg.initdb_command | yaml_dquote }}
    - require:
      - file: pg_replication-data-dir

{%- else %}

pg_replication-standby-bootstrap:
  pg_replication.standby_bootstrapped:
    - name: {{ pg.data_dir }}
    - primary_host: {{ pg.upstream.address }}
    - primary_port: {{ pg.port }}
    - slot: {{ pg.me.slot }}
    - user: {{ pg.replication.user }}
    - passfile: {{ pg.home }}/.pgpass
    - catch_up_from_archive: {{ pg.restore_command is not none }}
    - bin_dir: {{ pg.bin_dir }}
    - version: {{ pg.version }}
    - service: {{ pg.service_name }}
    - wipe_unrelated_data: {{ pg.standby.wipe_unrelated_data }}
    - wipe_promoted_copy: {{ pg.standby.wipe_promoted_copy }}
    - rebuild_lost_slot: {{ pg.standby.rebuild_lost_slot }}
    - timeout: {{ pg.standby.bootstrap_timeout }}
    - tls: {{ pg.peer_tls | json }}
{%- if pg.ssh and pg.ssh.bootstrap %}
    # standby:bootstrap_from barman: Barman's latest backup over the SSH link.
    - from_barman: {{ pg.ssh.bootstrap | json }}
{%- endif %}
    - require:
      - file: pg_replication-pgpass
{%- if pg.ssh and pg.ssh.bootstrap %}
      - sls: {{ tplroot }}.server.ssh
{%- endif %}
{%- if pg.peer_tls %}
      - sls: {{ tplroot }}.tls
{%- endif %}
      - sls: {{ tplroot }}.psycopg2
{%- endif %}
