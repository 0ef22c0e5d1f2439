# -*- coding: utf-8 -*-
# vim: ft=sls
# A backup host's clean: cron no longer runs `barman cron`, receive-wal stopped, the
# formula's Barman configuration and .pgpass removed. Barman's home (backups, WAL archive)
# and log directory stay.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

pg_replication-barman-cron-clean:
  file.absent:
    - name: /etc/cron.d/barman

{%- for server in pg.barman_servers %}

pg_replication-barman-receive-wal-clean-{{ server.name }}:
  barman.receive_wal_stopped:
    - name: {{ server.name }}
    - require:
      - file: pg_replication-barman-cron-clean
    - require_in:
      - file: pg_replication-barman-config-clean
{%- endfor %}

pg_replication-barman-config-clean:
  file.absent:
    - names:
{%- for server in pg.barman_servers %}
      - {{ pg.barman.config_dir }}/{{ server.name }}.conf
{%- endfor %}
      - {{ pg.barman.config_file }}
      - {{ pg.barman.home }}/.pgpass
{%- if pg.cloud_credentials %}
      - {{ pg.cloud_credentials }}
      - {{ pg.barman.cloud.backup_hook }}
{%- endif %}
