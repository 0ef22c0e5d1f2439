# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - {{ tplroot }}.repo

{%- if pg.createcluster_conf %}
# Debian: stop postgresql-common from creating a default cluster; the formula makes its own.
pg_replication-createcluster-conf:
  file.managed:
    - name: {{ pg.createcluster_conf }}
    - makedirs: True
    - contents: |
        # Managed by Salt (pg_replication)
        create_main_cluster = false
    - require_in:
      - pkg: pg_replication-packages
{%- endif %}

pg_replication-packages:
  pkg.installed:
    - pkgs:
      - {{ pg.pkgs.server }}
      - {{ pg.pkgs.client }}
{%- for pkg in pg.cloud_pkgs + (pg.ssh.pkgs if pg.ssh else []) %}
      - {{ pkg }}
{%- endfor %}
    - require:
      - sls: {{ tplroot }}.repo
