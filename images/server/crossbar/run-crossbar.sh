#!/bin/sh
# Start the control-room crossbar with secrets read from files (never inline in config.json).
#   WAMP_SECRET_FILE           secret of the `server` user (the Pi and sisock's hub), mode 0600
#   WAMP_CONSUMER_SECRET_FILE  secret of the `simonsobs` user (sisock's Grafana glue), mode 0600
#   CROSSBAR_TLS_PORT (8080), CROSSBAR_OCS_PORT (8001); .crossbar/server_{key,cert}.pem for TLS.
# The endpoints listen on 127.0.0.1: publish them deliberately (a reverse proxy or by editing
# "interface") once TLS and the secrets are in place.
set -eu
cd "$(dirname "$0")"
WAMP_SECRET="$(cat "${WAMP_SECRET_FILE:?set WAMP_SECRET_FILE}")"
WAMP_CONSUMER_SECRET="$(cat "${WAMP_CONSUMER_SECRET_FILE:?set WAMP_CONSUMER_SECRET_FILE}")"
export WAMP_SECRET WAMP_CONSUMER_SECRET
export CROSSBAR_TLS_PORT="${CROSSBAR_TLS_PORT:-8080}" CROSSBAR_OCS_PORT="${CROSSBAR_OCS_PORT:-8001}"
mkdir -p .crossbar
python3 render_config.py config.json .crossbar/config.json
exec crossbar start --cbdir .crossbar
