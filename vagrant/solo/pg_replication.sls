# The `solo` VM: a lone primary (no standby, no backup host) for a one-VM trial.
pg_replication:
  version: 15
  network: 192.168.11.0/24
  hosts:
    solo:
      role: primary
      address: 192.168.11.110
