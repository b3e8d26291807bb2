"""Real services on loopback for tests and the drill: PostgreSQL, Redis, Azurite, Prometheus, Alertmanager, Pushgateway.

Each service module starts the real program from this machine's packages in a private
temporary directory on a free loopback port and stops it on exit. Nothing here fakes a service.
"""
