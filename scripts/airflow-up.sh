#!/usr/bin/env bash
# Start Airflow (api-server :8080, scheduler, dag-processor, triggerer) for this checkout in its own
# process group, so airflow-stop.sh can stop every child it spawned.
set -euo pipefail
: "${AIRFLOW_HOME:?run through make airflow}"
pidfile="$AIRFLOW_HOME/standalone.pgid"
if [ -f "$pidfile" ] && kill -0 -- "-$(cat "$pidfile")" 2>/dev/null; then
  echo "Airflow is already running (process group $(cat "$pidfile")); make airflow-stop first"; exit 0
fi
export PATH="$PWD/.venv/bin:$PATH"  # standalone starts its components as `airflow ...`
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
setsid airflow standalone > "$AIRFLOW_HOME/standalone.log" 2>&1 < /dev/null &
echo $! > "$pidfile"   # setsid makes the child a group leader: its pid is the group id
echo "Airflow starting (log: $AIRFLOW_HOME/standalone.log); waiting for http://localhost:$AIRFLOW__API__PORT ..."
for _ in $(seq 1 180); do
  if curl -fs "http://localhost:$AIRFLOW__API__PORT/api/v2/monitor/health" >/dev/null 2>&1; then break; fi
  sleep 1
done
pw="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
echo "Airflow UI: http://localhost:$AIRFLOW__API__PORT"
if [ -f "$pw" ]; then echo "Login: user admin, password from $pw: $(cat "$pw")"; fi
echo "Stop everything with: make airflow-stop"
