# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Barman itself (the distribution's package, or PyPI into a virtualenv) and the PostgreSQL
# client binaries of every backed-up primary's major version (path_prefix points at them).
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}
{%- set install = pg.barman.install %}

include:
  - {{ tplroot }}.repo

{%- if install.method == 'pip' %}
pg_replication-barman-build-packages:
  pkg.installed:
    - pkgs: {{ pg.barman.build_pkgs | json }}

pg_replication-barman-group:
  group.present:
    - name: barman
    - system: True

pg_replication-barman-user:
  user.present:
    - name: barman
    - gid: barman
    - home: {{ pg.barman.home }}
    - createhome: True
    - shell: /bin/bash
    - system: True
    - require:
      - group: pg_replication-barman-group

pg_replication-barman-venv:
  cmd.run:
    - name: python3 -m venv {{ install.venv | quote }}
    - creates: {{ install.venv }}/bin/python
    - require:
      - pkg: pg_replication-barman-build-packages

{%- if opts.get('test') and not salt['file.file_exists'](install.venv ~ '/bin/pip') %}
# test=True before the virtualenv exists: pip.installed cannot look into it, so say here
# what the real run will do.
pg_replication-barman-pip:
  test.configurable_test_state:
    - name: barman{{ '==' ~ install.version if install.version else '' }}
    - changes: True
    - result: True
    - comment: barman would be installed from PyPI into the new virtualenv {{ install.venv }}
{%- else %}
pg_replication-barman-pip:
  pip.installed:
    - name: barman{{ '==' ~ install.version if install.version else '' }}
    - bin_env: {{ install.venv }}/bin/pip
    - require:
      - cmd: pg_replication-barman-venv
{%- endif %}

pg_replication-barman-link:
  file.symlink:
    - name: {{ install.link }}
    - target: {{ install.venv }}/bin/barman
    - makedirs: True
    - reload_modules: True
    - require:
      - pg_replication-barman-pip

{%- endif %}

# Barman's packages (method pkg) with the client of each backed-up version and the tools of
# the pillar's compressions and barman:cloud, in one transaction: barman pulls in a client itself, so two
# states could not both be predicted right by test=True on a bare host.
{%- set clients = pg.barman_servers | map(attribute='client_pkg') | unique | list %}
{#- Restore drills start the restored copy: the server binaries of each backed-up version. #}
{%- set drill_pkgs = pg.barman.drill.pkgs if pg.barman.drill else [] %}
{%- if drill_pkgs and pg.createcluster_conf %}

# Debian: the server package creates and starts no default cluster on the backup host.
pg_replication-barman-drill-createcluster-conf:
  file.managed:
    - name: {{ pg.createcluster_conf }}
    - makedirs: True
    - contents: |
        # Managed by Salt (pg_replication)
        create_main_cluster = false
    - require_in:
      - pkg: pg_replication-barman-packages
{%- endif %}

pg_replication-barman-packages:
  pkg.installed:
    - pkgs: {{ ((pg.barman.pkgs if install.method == 'pkg' else []) + clients + pg.barman.compression_pkgs + pg.cloud_pkgs + drill_pkgs) | json }}
    - require:
      - sls: {{ tplroot }}.repo
