#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) from Maven Central jars.
#
#   tools/kafka/kafka.sh up      fetch jars if needed, format, start, wait until ready (idempotent)
#   tools/kafka/kafka.sh down    stop the broker this script started
#   tools/kafka/kafka.sh restart stop and start again, keeping the data (broker-fault tests)
#   tools/kafka/kafka.sh status  exit 0 when a broker answers on the port
#
# Everything lives under $KAFKA_HOME (default .kafka/ in the repo): libs/, config/, data/,
# kafka.pid, kafka.log. Versions are pinned in tools/kafka/pom.xml.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
KAFKA_HOME="${KAFKA_HOME:-$root/.kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
KAFKA_READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-120}"
pidfile="$KAFKA_HOME/kafka.pid"
logfile="$KAFKA_HOME/kafka.log"
libs="$KAFKA_HOME/libs"

die() { echo "kafka: $*" >&2; exit 1; }

require_tools() {
  command -v java >/dev/null 2>&1 || die "java not found: install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven (Debian: apt-get install maven)"
  local major
  major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/.*java.specification.version = \([0-9]*\).*/\1/p')"
  [ "${major:-0}" -ge 17 ] || die "Kafka 4.x needs Java 17 or newer, found Java ${major:-unknown}"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

fetch_libs() {
  # A stamp per pom content: a version change re-fetches into a clean folder (copy-dependencies never
  # deletes stale jars).
  local stamp; stamp="$libs/.stamp-$(sha256sum "$here/pom.xml" | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  echo "kafka: fetching broker jars from Maven Central (once)..."
  rm -rf "$libs"
  mvn -B -q -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$libs" || die "mvn could not fetch the Kafka jars (see the output above)"
  touch "$stamp"
}

write_config() {
  mkdir -p "$KAFKA_HOME/config"
  sed -e "s#@DATA@#$KAFKA_HOME/data#g" -e "s#@PORT@#$KAFKA_PORT#g" \
      -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
      "$here/server.properties" > "$KAFKA_HOME/config/server.properties"
  cp "$here/log4j2.properties" "$here/tools-log4j2.properties" "$KAFKA_HOME/config/"
}

cluster_id() {
  # Kafka's Uuid: 16 random bytes, base64url without padding, never starting with '-'.
  python3 -c 'import base64,uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"): print(s); break'
}

up() {
  if pid="$(running_pid)"; then
    echo "kafka: already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  if port_open; then
    echo "kafka: reusing the broker already listening on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  require_tools
  fetch_libs
  write_config
  local t0; t0=$(date +%s.%N)
  if [ "${1:-fresh}" = fresh ]; then
    # A throw-away broker: a fresh data dir on every start, so no state leaks between runs.
    rm -rf "$KAFKA_HOME/data"; mkdir -p "$KAFKA_HOME/data"
    java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_HOME/config/tools-log4j2.properties" \
        -cp "$libs/*" kafka.tools.StorageTool format --standalone --cluster-id "$(cluster_id)" \
        --config "$KAFKA_HOME/config/server.properties" >"$KAFKA_HOME/format.log" 2>&1 \
        || { cat "$KAFKA_HOME/format.log" >&2; die "formatting the data dir failed"; }
  fi
  # setsid: the broker gets its own session, so Ctrl-C in a terminal does not reach it directly.
  setsid java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Dkafka.logs.dir="$KAFKA_HOME" \
      -Dlog4j2.configurationFile="$KAFKA_HOME/config/log4j2.properties" \
      -cp "$libs/*" kafka.Kafka "$KAFKA_HOME/config/server.properties" \
      >"$logfile" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$pidfile"
  local deadline=$(( $(date +%s) + KAFKA_READY_TIMEOUT ))
  until port_open; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2; rm -f "$pidfile"; die "the broker exited during start (log: $logfile)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$logfile" >&2; die "the broker was not ready after ${KAFKA_READY_TIMEOUT}s (log: $logfile)"
    fi
    sleep 0.2
  done
  printf "kafka: ready on 127.0.0.1:%s (pid %s, started in %ss, log %s)\n" \
    "$KAFKA_PORT" "$pid" "$(python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$t0")" "$logfile"
}

down() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pidfile"; echo "kafka: not running (nothing started by this script)"; return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then echo "kafka: no exit after 30s, killing"; kill -KILL "$pid"; fi
  rm -f "$pidfile"
  echo "kafka: stopped (pid $pid)"
}

case "${1:-}" in
  up) up fresh ;;
  down) down ;;
  restart)
    [ -f "$KAFKA_HOME/data/meta.properties" ] || die "no broker data to restart with: use 'up'"
    down; up keep ;;
  status) port_open && echo "kafka: up on 127.0.0.1:$KAFKA_PORT" || { echo "kafka: down"; exit 1; } ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
