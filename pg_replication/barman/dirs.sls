# -*- coding: utf-8 -*-
# vim: ft=sls
# SPDX-License-Identifier: Apache-2.0
# Barman's directories, once Barman and its user are installed. A file of their own: the
# backup host's TLS CA (../tls.sls) goes into one of them and the server files (init.sls)
# need that CA, so `- sls:` on init.sls would loop.
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ "/map.jinja" import pg with context %}

include:
  - .install

# Barman's home (every base backup and WAL segment) and its logs are private to the barman
# user and group (Debian's 0750), never widened; the configuration directory holds no secret.
pg_replication-barman-dirs:
  file.directory:
    - names:
      - {{ pg.barman.config_dir }}:
        - user: root
        - mode: '0755'
      - {{ pg.barman.home }}:
        - user: barman
        - mode: '0750'
      - {{ pg.barman.log_dir }}:
        - user: barman
        - mode: '0750'
    - group: barman
    - require:
      - sls: {{ tplroot }}.barman.install
