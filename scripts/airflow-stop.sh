#!/usr/bin/env bash
# Stop the process group started by airflow-up.sh (SIGTERM, then SIGKILL after a grace period).
set -uo pipefail
: "${AIRFLOW_HOME:?run through make airflow-stop}"
pidfile="$AIRFLOW_HOME/standalone.pgid"
[ -f "$pidfile" ] || { echo "Airflow is not running (no $pidfile)"; exit 0; }
pgid=$(cat "$pidfile")
kill -TERM -- "-$pgid" 2>/dev/null || true
for _ in $(seq 1 20); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 1; done
kill -KILL -- "-$pgid" 2>/dev/null || true
rm -f "$pidfile"
echo "Airflow stopped (process group $pgid)"
