#!/usr/bin/env bash
# Local Confluent-compatible Schema Registry: Apicurio Registry from Maven Central, storage in memory.
#
#   tools/registry/registry.sh up      fetch and extract once, start, wait until ready, set BACKWARD
#                                      (idempotent: a registry already answering is reused)
#   tools/registry/registry.sh down    stop the registry this script started
#   tools/registry/registry.sh status  exit 0 when the Confluent-compatible API answers on the port
#
# The API is http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7 (8081, Confluent's port; the base URL
# includes that path). Every start is empty (H2 in memory). Apicurio's default global compatibility
# is NONE, Confluent's BACKWARD: 'up' sets BACKWARD and checks it took.
#
# Everything lives under $REGISTRY_HOME (default .registry/ in the repo): cache/ (the tarball, as
# downloaded once by Maven: mvn keeps a copy in ~/.m2 too), app-<version>/ (extracted once),
# registry.pid, registry.log (fresh on every start). The java process gets a clean environment
# (Apicurio reads many variables: KAFKA_BOOTSTRAP_SERVERS would make it send its events to that
# broker) and $REGISTRY_JAVA_OPTS after its own options. $REGISTRY_READY_TIMEOUT (90 s) bounds the
# wait; $REGISTRY_HEAP (384m) is its heap.
set -euo pipefail

# Apicurio Registry 2.6.x: the last line built for Java 17 (3.x needs Java 21). The "all" tarball of
# io.apicurio:apicurio-registry-app holds the Quarkus runner jar and its lib/. A version bump needs
# the new tarball's sha256 (Maven Central's .sha1 of this one: 28b56c85372e66e9ebcf569a31ad6b643e2bf33e).
REGISTRY_VERSION="2.6.13.Final"
REGISTRY_SHA256="3cda1b34aa020fb4ac4dd6a66018d757e81e437f97e20a1f92d366b70091c6ba"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
REGISTRY_HOME="${REGISTRY_HOME:-$root/.registry}"
REGISTRY_PORT="${REGISTRY_PORT:-8081}"
REGISTRY_READY_TIMEOUT="${REGISTRY_READY_TIMEOUT:-90}"
REGISTRY_HEAP="${REGISTRY_HEAP:-384m}"
REGISTRY_JAVA_OPTS="${REGISTRY_JAVA_OPTS:-}"
base_url="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
tarball_name="apicurio-registry-app-$REGISTRY_VERSION-all.tar.gz"
cache="$REGISTRY_HOME/cache"
tarball="$cache/$tarball_name"
app="$REGISTRY_HOME/app-$REGISTRY_VERSION"
runner="apicurio-registry-app-$REGISTRY_VERSION-runner.jar"
pidfile="$REGISTRY_HOME/registry.pid"
logfile="$REGISTRY_HOME/registry.log"

die() { echo "registry: $*" >&2; exit 1; }

require_tools() {
  command -v java >/dev/null 2>&1 || die "java not found: install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
  command -v curl >/dev/null 2>&1 || die "curl not found: install it (Debian: apt-get install curl)"
  local major
  major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/.*java.specification.version = \([0-9]*\).*/\1/p')"
  [ "${major:-0}" -ge 17 ] || die "Apicurio Registry $REGISTRY_VERSION (Quarkus 3) needs Java 17 or newer, found Java ${major:-unknown}"
}

# The ccompat API's global config: its JSON when the registry answers, nothing (status 1) otherwise.
global_config() { curl -fsS -m 3 "$base_url/config" 2>/dev/null; }
answers() { global_config >/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$REGISTRY_PORT") 2>/dev/null; }

running_pid() {
  # The pid of the registry this script started from this home, if it still runs (a reused pid is
  # not ours). -ww: the whole command line, never cut to the terminal's (or $COLUMNS's) width.
  [ -f "$pidfile" ] || return 1
  local pid; pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  local args; args="$(ps -ww -o args= -p "$pid" 2>/dev/null)" || return 1
  [[ "$args" == *"$runner"* ]] || return 1
  echo "$pid"
}

pid_port() { ps -ww -o args= -p "$1" 2>/dev/null | sed -n 's/.*-Dquarkus\.http\.port=\([0-9]*\).*/\1/p'; }

fetch_tarball() {
  # Once, through Maven (its settings, mirrors and proxy; -C: a checksum mismatch fails), into a
  # temporary folder, checked against the pinned sha256, then renamed: the cache holds a complete
  # tarball or none.
  [ -f "$tarball" ] && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven (Debian: apt-get install maven); it fetches $tarball_name once"
  echo "registry: fetching Apicurio Registry $REGISTRY_VERSION from Maven Central (142 MB, once)..."
  mkdir -p "$cache"
  rm -rf "$cache"/.download.*
  local tmp; tmp="$(mktemp -d "$cache/.download.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: $tmp is local
  trap "rm -rf '$tmp'" EXIT
  mvn -B -q -C -Dstyle.color=never "$DEPENDENCY_PLUGIN:copy" \
      -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
      -DoutputDirectory="$tmp" >"$tmp/mvn.log" 2>&1 \
    || { cat "$tmp/mvn.log" >&2; die "mvn could not fetch io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all (its output is above)"; }
  local sum; sum="$(sha256sum "$tmp/$tarball_name" | cut -d' ' -f1)"
  [ "$sum" = "$REGISTRY_SHA256" ] \
    || die "$tarball_name has sha256 $sum, expected $REGISTRY_SHA256 (a corrupt copy in ~/.m2/repository/io/apicurio? delete it and retry)"
  rm -f "$cache"/apicurio-registry-app-*-all.tar.gz   # an older version's
  mv "$tmp/$tarball_name" "$tarball"
  rm -rf "$tmp"; trap - EXIT
}

extract() {
  # Once per version, into a temporary folder renamed when complete.
  [ -f "$app/$runner" ] && return 0
  rm -rf "$REGISTRY_HOME"/app-* "$REGISTRY_HOME"/.extract.*
  local tmp; tmp="$(mktemp -d "$REGISTRY_HOME/.extract.XXXXXX")"
  tar xzf "$tarball" --no-same-owner -C "$tmp" || { rm -rf "$tmp"; die "could not extract $tarball (delete it to fetch it again)"; }
  [ -f "$tmp/$runner" ] || { rm -rf "$tmp"; die "$tarball holds no $runner"; }
  chmod 755 "$tmp"
  mv "$tmp" "$app"
}

launch() {
  # In the background with its own session (Ctrl-C in a terminal does not reach it), without the
  # lock of 'up' (fd 9), with a clean environment, on 127.0.0.1 only. C1 only and a small connection
  # pool: it starts faster and takes less memory, and a test registry needs no peak throughput. Nothing reaches the network: auth
  # (OIDC), Sentry and the Kafka event sink are off unless configured, and they are not.
  local opts=()
  # shellcheck disable=SC2206  # REGISTRY_JAVA_OPTS is a list of options, split on spaces
  [ -n "$REGISTRY_JAVA_OPTS" ] && opts=($REGISTRY_JAVA_OPTS)
  cd "$app"
  env -i PATH="$PATH" HOME="$HOME" LANG=C.UTF-8 TZ=UTC \
    setsid java -Xms64m -Xmx"$REGISTRY_HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dregistry.auth.enabled=false -Dregistry.enable.sentry=false \
      '-D%prod.quarkus.datasource.jdbc.initial-size=2' '-D%prod.quarkus.datasource.jdbc.min-size=2' \
      '-D%prod.quarkus.datasource.jdbc.max-size=20' \
      ${opts[@]+"${opts[@]}"} \
      -jar "$app/$runner" \
      >>"$logfile" 2>&1 </dev/null 9>&- &
  echo $!
}

wait_ready() {
  # Until the ccompat API answers; fails if PID exits or REGISTRY_READY_TIMEOUT passes.
  local pid=$1
  local deadline=$(( $(date +%s) + REGISTRY_READY_TIMEOUT ))
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"; tail -n 30 "$logfile" >&2; die "the registry exited during start (log: $logfile)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$logfile" >&2
      die "the registry (pid $pid) did not answer on $base_url within ${REGISTRY_READY_TIMEOUT}s (log: $logfile; 'down' stops it)"
    fi
    sleep 0.2
  done
}

set_backward() {
  curl -fsS -m 10 -X PUT -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
      -d '{"compatibility": "BACKWARD"}' "$base_url/config" >/dev/null \
    || die "could not set the global compatibility to BACKWARD (log: $logfile)"
  local config; config="$(global_config)" || die "the registry stopped answering (log: $logfile)"
  [ "$config" = '{"compatibilityLevel":"BACKWARD"}' ] \
    || die "the global compatibility is still $config after setting BACKWARD (log: $logfile)"
}

check_log() {
  # The start's errors, if any (a bad request later is logged as an ERROR too: only the start counts).
  if grep -q ' ERROR ' "$logfile"; then
    echo "registry: the log has errors (it answers anyway):" >&2
    grep ' ERROR ' "$logfile" | head -n 5 >&2
  fi
}

since() { python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$1"; }

up() {
  mkdir -p "$REGISTRY_HOME"
  # One 'up' at a time per home: a second waits, then finds the first one's registry answering.
  exec 9>"$REGISTRY_HOME/.lock"
  flock 9
  local pid t0
  if answers; then
    pid="$(running_pid || echo "not started by this script")"
    echo "registry: reusing the one answering on $base_url (pid $pid, $(global_config))"; return 0
  fi
  require_tools
  t0=$(date +%s.%N)
  if pid="$(running_pid)"; then
    local port; port="$(pid_port "$pid")"
    [ "$port" = "$REGISTRY_PORT" ] \
      || die "this home's registry (pid $pid) runs on port $port: 'down' it first, or give this one another REGISTRY_HOME"
    # Started by an 'up' that was interrupted: still starting, or hung (then the wait fails).
    echo "registry: pid $pid (started earlier) does not answer yet, waiting"
  else
    ! port_open || die "port $REGISTRY_PORT is taken by a program that is not a schema registry: choose another REGISTRY_PORT"
    fetch_tarball
    extract
    t0=$(date +%s.%N)
    : >"$logfile"
    pid="$(launch)"
    echo "$pid" > "$pidfile"
  fi
  wait_ready "$pid"
  set_backward
  check_log
  printf "registry: ready on %s (pid %s, started in %ss, log %s)\n" "$base_url" "$pid" "$(since "$t0")" "$logfile"
}

down() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pidfile"
    if answers; then
      echo "registry: the one on $base_url was not started by this script: left running"
    else
      echo "registry: not running (nothing started by this script)"
    fi
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then echo "registry: no exit after 20s, killing"; kill -KILL "$pid"; fi
  rm -f "$pidfile"
  echo "registry: stopped (pid $pid)"
}

status() {
  local config pid
  if config="$(global_config)"; then
    pid="$(running_pid || echo "not started by this script")"
    echo "registry: up on $base_url (pid $pid, $config)"
  else
    echo "registry: down ($base_url)"; return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
