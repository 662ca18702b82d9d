#!/bin/sh
# Start the control-room crossbar with secrets read from files (never inline in config.json).
#   WAMP_SECRET_FILE           secret of the `server` user (the Pi and sisock's hub), mode 0600
#   WAMP_CONSUMER_SECRET_FILE  secret of the `simonsobs` user (sisock's Grafana glue), mode 0600
#   CROSSBAR_TLS_PORT (8080), CROSSBAR_OCS_PORT (8001); .crossbar/server_{key,cert}.pem for TLS.
#   CROSSBAR_INTERFACE (0.0.0.0)      where the TLS + WAMP-CRA transport listens: the Pis connect here
#   CROSSBAR_OCS_INTERFACE (0.0.0.0)  where the anonymous OCS transport listens
# The defaults are for the container: a port the host publishes is forwarded to the container's own
# address, so only 0.0.0.0 inside it is reachable; docker-compose.yml decides what leaves the host
# (8080 to the network, the anonymous 8001 on the host's loopback only). Outside a container, keep
# the anonymous port private: CROSSBAR_OCS_INTERFACE=127.0.0.1.
set -eu
cd "$(dirname "$0")"
WAMP_SECRET="$(cat "${WAMP_SECRET_FILE:?set WAMP_SECRET_FILE}")"
WAMP_CONSUMER_SECRET="$(cat "${WAMP_CONSUMER_SECRET_FILE:?set WAMP_CONSUMER_SECRET_FILE}")"
export WAMP_SECRET WAMP_CONSUMER_SECRET
export CROSSBAR_TLS_PORT="${CROSSBAR_TLS_PORT:-8080}" CROSSBAR_OCS_PORT="${CROSSBAR_OCS_PORT:-8001}"
export CROSSBAR_INTERFACE="${CROSSBAR_INTERFACE:-0.0.0.0}" CROSSBAR_OCS_INTERFACE="${CROSSBAR_OCS_INTERFACE:-0.0.0.0}"
mkdir -p .crossbar
python3 render_config.py config.json .crossbar/config.json
exec crossbar start --cbdir .crossbar
