"""The local stack of the production profile, started from installed programs (no containers).

``python -m devstack up|down|wipe|status|restart-postgres`` (``make stack-up`` ...):
PostgreSQL 15 (``initdb`` + ``postgres``), SeaweedFS's S3 server, MLflow's tracking server with
the basic-auth app and proxied artifacts, and the Dagster daemon and webserver, all on 127.0.0.1,
with their data, logs, PID files and generated credentials under ``.stack/`` (git-ignored).
"""
