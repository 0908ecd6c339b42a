#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) from Maven Central jars.
#
#   tools/kafka/kafka.sh up      fetch jars if needed, format, start, wait until ready (idempotent)
#   tools/kafka/kafka.sh down    stop the broker this script started
#   tools/kafka/kafka.sh restart stop and start again, keeping the data (broker-fault tests)
#   tools/kafka/kafka.sh status  exit 0 when a broker answers on the port
#
# Everything lives under $KAFKA_HOME (default .kafka/ in the repo): libs/, config/, data/, ssl/,
# kafka.pid, kafka.log. Versions are pinned in tools/kafka/pom.xml.
#
# Listeners: PLAINTEXT on $KAFKA_PORT (9092), the controller on $KAFKA_CONTROLLER_PORT (9093), and
# SASL_SSL on $KAFKA_SASL_PORT (9094) for the managed-Kafka settings' tests: PLAIN, SCRAM-SHA-256
# and SCRAM-SHA-512, user "streamapp", password "streamapp-secret", a certificate for 127.0.0.1
# signed by a throw-away CA made here with the JDK's keytool ($KAFKA_HOME/ssl/ca.pem).
#
# Authorization: KRaft's StandardAuthorizer, deny unless an ACL allows. Super users: User:ANONYMOUS
# (PLAINTEXT and controller listeners) and User:streamapp. One SASL user per role, "worker",
# "producer" and "keda" (password "<user>-secret", every mechanism), gets exactly the ACLs of
# tools/kafka/acls.txt, which this script applies after every start (one JVM, KafkaAcls.java).
#
# BROKERS=3: a three-node cluster for replication and fail-over tests. Three combined
# broker+controller nodes (node ids 1, 2, 3) with a static quorum (controller.quorum.voters), each
# formatted with the same cluster id, each with its own server.properties, data/, kafka.log and
# kafka.pid under $KAFKA_HOME/node-N (libs/, ssl/ and the tools are shared). Node N listens on
# $KAFKA_PORT + 100*(N-1) (9092, 9192, 9292), its controller on $KAFKA_CONTROLLER_PORT + 100*(N-1)
# and its SASL_SSL listener on $KAFKA_SASL_PORT + 100*(N-1); same users, certificate and ACLs as the
# single node. Topics get 3 replicas and min.insync.replicas=2 (the internal ones too), so one node
# may die without losing an acknowledged write (acks=all); a silent node is fenced after 3 s
# (broker.session.timeout.ms) and a restarted one leads its preferred partitions again within 5 s
# (leader.imbalance.check.interval.seconds). $KAFKA_HEAP is per node (default 384m here).
#
#   BROKERS=3 tools/kafka/kafka.sh up|down|status   the three nodes ('up' formats them afresh)
#   BROKERS=3 tools/kafka/kafka.sh kill-node N      SIGKILL node N (1, 2 or 3)
#   BROKERS=3 tools/kafka/kafka.sh start-node N     start node N again on its data, wait until it is
#                                                   a registered, unfenced broker again
#   BROKERS=3 tools/kafka/kafka.sh leader TOPIC P   print the node id leading partition P (-1: none)
#   BROKERS=3 tools/kafka/kafka.sh controller       print the node id of the active controller
#
# leader and controller ask the live nodes through kafka-clients' Admin API (KafkaCluster.java,
# compiled once like KafkaAcls.java): DescribeTopics and DescribeQuorum.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
KAFKA_HOME="${KAFKA_HOME:-$root/.kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-9094}"
BROKERS="${BROKERS:-1}"
case "$BROKERS" in
  1) KAFKA_HEAP="${KAFKA_HEAP:-512m}" ;;
  3) KAFKA_HEAP="${KAFKA_HEAP:-384m}" ;;
  *) echo "kafka: BROKERS=$BROKERS: only 1 (the default) or 3 nodes" >&2; exit 2 ;;
esac
KAFKA_READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-120}"
pidfile="$KAFKA_HOME/kafka.pid"
logfile="$KAFKA_HOME/kafka.log"
libs="$KAFKA_HOME/libs"
ssl_dir="$KAFKA_HOME/ssl"
# Guards only the throw-away keystores below; Kafka's config needs one.
ssl_password="streamapp-test-keystore"
sasl_user="streamapp"
sasl_password="streamapp-secret"
# The per-role users of tools/kafka/acls.txt; the PLAIN ones are in server.properties too.
role_users=(worker producer keda)
acl_tool="$KAFKA_HOME/acl-tool"
cluster_tool="$KAFKA_HOME/cluster-tool"

die() { echo "kafka: $*" >&2; exit 1; }

require_tools() {
  command -v java >/dev/null 2>&1 || die "java not found: install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
  command -v mvn >/dev/null 2>&1 || die "mvn not found: install Maven (Debian: apt-get install maven)"
  local major
  major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/.*java.specification.version = \([0-9]*\).*/\1/p')"
  [ "${major:-0}" -ge 17 ] || die "Kafka 4.x needs Java 17 or newer, found Java ${major:-unknown}"
  command -v keytool >/dev/null 2>&1 || die "keytool not found: it comes with the JDK (put its bin/ on the PATH)"
  command -v javac >/dev/null 2>&1 || die "javac not found: install a JDK, not only a JRE (Debian: openjdk-17-jdk-headless)"
}

port_open() { port_open_at "$KAFKA_PORT"; }
port_open_at() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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

make_certs() {
  # A CA and a broker certificate for 127.0.0.1/localhost, made once per $KAFKA_HOME (EC keys: fast
  # to make). The CA keeps its key in ca.p12 and gives clients ca.pem; broker.p12 holds the
  # broker's key with its chain. The extensions are the ones strict X.509 checks (Python 3.13's
  # default) require.
  [ -f "$ssl_dir/broker.p12" ] && [ -f "$ssl_dir/ca.pem" ] && return 0
  rm -rf "$ssl_dir"; mkdir -p "$ssl_dir"
  local kt=(keytool -storetype PKCS12 -storepass "$ssl_password" -keypass "$ssl_password")
  local key=(-keyalg EC -groupname secp256r1 -validity 3650)
  {
    "${kt[@]}" -keystore "$ssl_dir/ca.p12" -genkeypair -alias ca "${key[@]}" \
        -dname "CN=streamapp test CA" -ext bc:c=ca:true -ext ku:c=keyCertSign,cRLSign
    "${kt[@]}" -keystore "$ssl_dir/ca.p12" -exportcert -rfc -alias ca -file "$ssl_dir/ca.pem"
    "${kt[@]}" -keystore "$ssl_dir/broker.p12" -genkeypair -alias broker "${key[@]}" -dname "CN=127.0.0.1"
    "${kt[@]}" -keystore "$ssl_dir/broker.p12" -certreq -alias broker -file "$ssl_dir/broker.csr"
    "${kt[@]}" -keystore "$ssl_dir/ca.p12" -gencert -alias ca -validity 3650 -rfc \
        -infile "$ssl_dir/broker.csr" -outfile "$ssl_dir/broker.pem" \
        -ext san=ip:127.0.0.1,dns:localhost -ext ku:c=digitalSignature -ext eku=serverAuth
    "${kt[@]}" -keystore "$ssl_dir/broker.p12" -importcert -noprompt -alias ca -file "$ssl_dir/ca.pem"
    "${kt[@]}" -keystore "$ssl_dir/broker.p12" -importcert -alias broker -file "$ssl_dir/broker.pem"
  } >"$ssl_dir/keytool.log" 2>&1 || { cat "$ssl_dir/keytool.log" >&2; rm -f "$ssl_dir/broker.p12"; die "keytool could not make the test certificates"; }
}

compile_tool() {
  # tools/kafka/<name>.java compiled once per content against the fetched kafka-clients (javac: ~2 s).
  local name=$1 dir=$2
  local stamp; stamp="$dir/.stamp-$(cat "$here/$name.java" "$libs"/.stamp-* | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  rm -rf "$dir"; mkdir -p "$dir"
  javac -nowarn -d "$dir" -cp "$libs/*" "$here/$name.java" >"$dir.log" 2>&1 \
    || { cat "$dir.log" >&2; die "could not compile tools/kafka/$name.java"; }
  touch "$stamp"
}

build_acl_tool() { compile_tool KafkaAcls "$acl_tool"; }

apply_acls() {
  # As a super user (PLAINTEXT: User:ANONYMOUS). ACLs live in the metadata log, so a restart keeps
  # them; applying again anyway makes the broker's set equal to the file's (stale ones removed).
  java -Xmx128m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_HOME/config/tools-log4j2.properties" \
      -cp "$acl_tool:$libs/*" KafkaAcls "127.0.0.1:$KAFKA_PORT" "$here/acls.txt" \
    || die "could not apply the ACLs of tools/kafka/acls.txt (log: $logfile)"
}

write_config() {
  write_tool_config
  sed -e "s#@DATA@#$KAFKA_HOME/data#g" -e "s#@PORT@#$KAFKA_PORT#g" \
      -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" -e "s#@SASL_PORT@#$KAFKA_SASL_PORT#g" \
      -e "s#@SSL_DIR@#$ssl_dir#g" -e "s#@SSL_PASSWORD@#$ssl_password#g" \
      "$here/server.properties" > "$KAFKA_HOME/config/server.properties"
}

write_tool_config() {
  mkdir -p "$KAFKA_HOME/config"
  cp "$here/log4j2.properties" "$here/tools-log4j2.properties" "$KAFKA_HOME/config/"
}

cluster_id() {
  # Kafka's Uuid: 16 random bytes, base64url without padding, never starting with '-'.
  python3 -c 'import base64,uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"): print(s); break'
}

format() {
  # The storage of one node, with the SCRAM users of the SASL_SSL listener: CONFIG LOG CLUSTER_ID
  # [the quorum flag: --standalone for the single node; none for a static quorum].
  local config=$1 log=$2 id=$3; shift 3
  local scram=(--add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$sasl_password]"
               --add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]")
  local user
  for user in "${role_users[@]}"; do
    scram+=(--add-scram "SCRAM-SHA-256=[name=$user,password=$user-secret]"
            --add-scram "SCRAM-SHA-512=[name=$user,password=$user-secret]")
  done
  java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_HOME/config/tools-log4j2.properties" \
      -cp "$libs/*" kafka.tools.StorageTool format "$@" --cluster-id "$id" \
      --config "$config" \
      "${scram[@]}" \
      >"$log" 2>&1 \
      || { cat "$log" >&2; die "formatting the data dir failed"; }
}

launch() {
  # Start one node in the background (CONFIG LOGS_DIR LOGFILE, appended to) and print its pid.
  # setsid: the broker gets its own session, so Ctrl-C in a terminal does not reach it directly.
  # maxCachedBufferSize: the JDK keeps, per network thread, the largest temporary direct buffer it
  # ever read into; after a few 60 MB snapshot records those filled the direct memory (the heap's
  # size) and the broker failed every request with OutOfMemoryError until restarted (seen here).
  setsid java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djdk.nio.maxCachedBufferSize=1048576 \
      -Dkafka.logs.dir="$2" \
      -Dlog4j2.configurationFile="$KAFKA_HOME/config/log4j2.properties" \
      -cp "$libs/*" kafka.Kafka "$1" \
      >>"$3" 2>&1 < /dev/null &
  echo $!
}

wait_ready() {
  # Until PORT answers; fails if PID exits or KAFKA_READY_TIMEOUT passes (PORT PID LOGFILE WHO).
  local port=$1 pid=$2 log=$3 who=$4
  local deadline=$(( $(date +%s) + KAFKA_READY_TIMEOUT ))
  until port_open_at "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$log" >&2; echo "kafka: $who exited during start (log: $log)" >&2; return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 30 "$log" >&2; die "$who was not ready after ${KAFKA_READY_TIMEOUT}s (log: $log)"
    fi
    sleep 0.2
  done
}

since() { python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),1))" "$1"; }

up() {
  if pid="$(running_pid)"; then
    echo "kafka: already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  if port_open; then
    echo "kafka: reusing the broker already listening on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  require_tools
  fetch_libs
  make_certs
  build_acl_tool
  write_config
  local t0; t0=$(date +%s.%N)
  if [ "${1:-fresh}" = fresh ]; then
    # A throw-away broker: a fresh data dir on every start, so no state leaks between runs.
    rm -rf "$KAFKA_HOME/data"; mkdir -p "$KAFKA_HOME/data"
    format "$KAFKA_HOME/config/server.properties" "$KAFKA_HOME/format.log" "$(cluster_id)" --standalone
  fi
  : >"$logfile"
  local pid; pid="$(launch "$KAFKA_HOME/config/server.properties" "$KAFKA_HOME" "$logfile")"
  echo "$pid" > "$pidfile"
  wait_ready "$KAFKA_PORT" "$pid" "$logfile" "the broker" || { rm -f "$pidfile"; exit 1; }
  apply_acls
  printf "kafka: ready on 127.0.0.1:%s (pid %s, started in %ss, log %s)\n" \
    "$KAFKA_PORT" "$pid" "$(since "$t0")" "$logfile"
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

# --- BROKERS=3: three combined broker+controller nodes -----------------------------------------

nodes=(1 2 3)
node_dir() { echo "$KAFKA_HOME/node-$1"; }
node_port() { echo $(( KAFKA_PORT + 100 * ($1 - 1) )); }
node_controller_port() { echo $(( KAFKA_CONTROLLER_PORT + 100 * ($1 - 1) )); }
node_sasl_port() { echo $(( KAFKA_SASL_PORT + 100 * ($1 - 1) )); }

node_running_pid() {
  local file; file="$(node_dir "$1")/kafka.pid"
  [ -f "$file" ] || return 1
  local pid; pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

all_nodes() {
  # Every node's client listener: a bootstrap list that still works with one node down.
  local n out=()
  for n in "${nodes[@]}"; do out+=("127.0.0.1:$(node_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

check_node() {
  case "${1:-}" in 1|2|3) ;; *) die "give a node: 1, 2 or 3" ;; esac
}

write_node_config() {
  # The single node's server.properties (listeners, SASL, authorizer, footprint) with this node's
  # ports and data dir; the keys a three-node cluster sets otherwise are dropped from it and
  # appended below, so that each key has one value.
  local n=$1 dir; dir="$(node_dir "$1")"
  local voters="" m
  for m in "${nodes[@]}"; do voters+="${voters:+,}$m@127.0.0.1:$(node_controller_port "$m")"; done
  mkdir -p "$dir"
  {
    sed -e "s#@DATA@#$dir/data#g" -e "s#@PORT@#$(node_port "$n")#g" \
        -e "s#@CONTROLLER_PORT@#$(node_controller_port "$n")#g" -e "s#@SASL_PORT@#$(node_sasl_port "$n")#g" \
        -e "s#@SSL_DIR@#$ssl_dir#g" -e "s#@SSL_PASSWORD@#$ssl_password#g" \
        "$here/server.properties" \
      | grep -v -E '^(node\.id|controller\.quorum\.bootstrap\.servers|[a-z.]*replication\.factor|[a-z.]*min\.isr|min\.insync\.replicas)='
    cat <<EOF

# BROKERS=3 (kafka.sh): node $n of three combined broker+controller nodes, static quorum.
node.id=$n
controller.quorum.voters=$voters
# Three replicas of every topic, internal ones included; a write with acks=all needs two of them.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# Faster fail-over: the controller fences a silent broker after 3 s (defaults 2 s and 9 s), which
# moves its partitions' leadership and takes it out of their in-sync replicas.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=3000
# A restarted node leads its preferred partitions again within 5 s (default 300 s): clients meet
# that second leadership change too, as after a rolling restart.
leader.imbalance.check.interval.seconds=5
EOF
  } > "$dir/server.properties"
}

cluster_tool_run() {
  # KafkaCluster.java against every node; the client's warnings about a node that is down (the
  # point of these tests) are left out of stderr.
  compile_tool KafkaCluster "$cluster_tool"
  local err rc=0; err="$(mktemp)"
  java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
      -Dlog4j2.configurationFile="$KAFKA_HOME/config/tools-log4j2.properties" \
      -cp "$cluster_tool:$libs/*" KafkaCluster "$(all_nodes)" "$@" 2>"$err" || rc=$?
  grep -v "could not be established. Node may not be available" "$err" >&2 || true
  rm -f "$err"
  return "$rc"
}

start_node() {
  # Node N on the data it has (formatted by 'up'), its log appended to the one of its last run.
  local n=$1 dir; dir="$(node_dir "$1")"
  local t0; t0=$(date +%s.%N)
  echo "--- kafka.sh start-node $n, $(date -u +%FT%TZ)" >>"$dir/kafka.log"
  local pid; pid="$(launch "$dir/server.properties" "$dir" "$dir/kafka.log")"
  echo "$pid" > "$dir/kafka.pid"
  wait_ready "$(node_port "$n")" "$pid" "$dir/kafka.log" "node $n" || { rm -f "$dir/kafka.pid"; return 1; }
  echo "$t0"
}

cluster_up() {
  local n port running=()
  for n in "${nodes[@]}"; do node_running_pid "$n" >/dev/null && running+=("$n"); done
  if [ "${#running[@]}" = 3 ]; then
    echo "kafka: already running: 3 nodes on 127.0.0.1 ($(all_nodes))"; return 0
  fi
  [ "${#running[@]}" = 0 ] || die "nodes ${running[*]} run already: 'start-node N' the others, or 'down' first"
  for n in "${nodes[@]}"; do
    for port in "$(node_port "$n")" "$(node_controller_port "$n")" "$(node_sasl_port "$n")"; do
      ! port_open_at "$port" || die "port $port is taken (another broker?): choose another KAFKA_PORT, KAFKA_CONTROLLER_PORT or KAFKA_SASL_PORT"
    done
  done
  require_tools
  fetch_libs
  make_certs
  build_acl_tool
  compile_tool KafkaCluster "$cluster_tool"
  write_tool_config
  local t0; t0=$(date +%s.%N)
  # A throw-away cluster: fresh data dirs, one cluster id; the static quorum needs no format flag.
  local id pid formats=(); id="$(cluster_id)"
  for n in "${nodes[@]}"; do
    write_node_config "$n"
    rm -rf "$(node_dir "$n")/data"; mkdir -p "$(node_dir "$n")/data"
    format "$(node_dir "$n")/server.properties" "$(node_dir "$n")/format.log" "$id" &
    formats+=($!)
  done
  for pid in "${formats[@]}"; do wait "$pid" || exit 1; done
  # All three together: a broker registers only once the quorum has elected a leader.
  local pids=()
  for n in "${nodes[@]}"; do
    : >"$(node_dir "$n")/kafka.log"
    pids+=("$(launch "$(node_dir "$n")/server.properties" "$(node_dir "$n")" "$(node_dir "$n")/kafka.log")")
    echo "${pids[-1]}" > "$(node_dir "$n")/kafka.pid"
  done
  for n in "${nodes[@]}"; do
    wait_ready "$(node_port "$n")" "${pids[n-1]}" "$(node_dir "$n")/kafka.log" "node $n" \
      || { cluster_down >/dev/null; exit 1; }
  done
  cluster_tool_run wait-brokers "$KAFKA_READY_TIMEOUT" "${nodes[@]}" \
    || { cluster_down >/dev/null; die "the three brokers did not register within ${KAFKA_READY_TIMEOUT}s"; }
  apply_acls
  printf "kafka: 3 nodes ready on %s (pids %s, started in %ss, logs %s/node-N/kafka.log)\n" \
    "$(all_nodes)" "${pids[*]}" "$(since "$t0")" "$KAFKA_HOME"
}

cluster_down() {
  # SIGTERM to all nodes at once, SIGKILL to those still running 10 s later: the last node's
  # controlled shutdown may wait for a quorum that has left (a test run saw 30 s), and 'up'
  # formats afresh anyway.
  local n pid stopped=()
  for n in "${nodes[@]}"; do
    if pid="$(node_running_pid "$n")"; then kill -TERM "$pid"; stopped+=("$pid"); fi
    rm -f "$(node_dir "$n")/kafka.pid"
  done
  [ "${#stopped[@]}" -gt 0 ] || { echo "kafka: not running (no node started by this script)"; return 0; }
  local deadline=$(( $(date +%s) + 10 ))
  for pid in "${stopped[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "kafka: pid $pid still runs after 10s, killing"; kill -KILL "$pid"; fi
  done
  echo "kafka: stopped (pids ${stopped[*]})"
}

cluster_status() {
  local n pid up=0
  for n in "${nodes[@]}"; do
    if port_open_at "$(node_port "$n")"; then
      up=$((up + 1)); pid="$(node_running_pid "$n" || echo "not started here")"
      echo "kafka: node $n up on 127.0.0.1:$(node_port "$n") (pid $pid)"
    else
      echo "kafka: node $n down (127.0.0.1:$(node_port "$n"))"
    fi
  done
  [ "$up" = 3 ]
}

kill_node() {
  check_node "$1"
  local pid
  pid="$(node_running_pid "$1")" || die "node $1 is not running"
  kill -KILL "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -f "$(node_dir "$1")/kafka.pid"
  echo "kafka: node $1 killed (pid $pid)"
}

restart_node() {
  check_node "$1"
  local pid t0
  if pid="$(node_running_pid "$1")"; then echo "kafka: node $1 already running (pid $pid)"; return 0; fi
  [ -f "$(node_dir "$1")/data/meta.properties" ] || die "node $1 has no data to start with: use 'up'"
  ! port_open_at "$(node_port "$1")" || die "port $(node_port "$1") is taken by another process"
  t0="$(start_node "$1")" || exit 1
  cluster_tool_run wait-brokers "$KAFKA_READY_TIMEOUT" "$1" || die "node $1 did not rejoin (log: $(node_dir "$1")/kafka.log)"
  echo "kafka: node $1 back on 127.0.0.1:$(node_port "$1") (pid $(node_running_pid "$1"), in $(since "$t0")s)"
}

if [ "$BROKERS" = 3 ]; then
  case "${1:-}" in
    up) cluster_up ;;
    down) cluster_down ;;
    status) cluster_status ;;
    kill-node) kill_node "${2:-}" ;;
    start-node) restart_node "${2:-}" ;;
    leader) [ $# = 3 ] || die "usage: $0 leader TOPIC PARTITION"; cluster_tool_run leader "$2" "$3" ;;
    controller) cluster_tool_run controller ;;
    *) echo "usage: BROKERS=3 $0 up|down|status|kill-node N|start-node N|leader TOPIC PARTITION|controller" >&2; exit 2 ;;
  esac
  exit
fi

case "${1:-}" in
  up) up fresh ;;
  down) down ;;
  restart)
    [ -f "$KAFKA_HOME/data/meta.properties" ] || die "no broker data to restart with: use 'up'"
    down; up keep ;;
  status) if port_open; then echo "kafka: up on 127.0.0.1:$KAFKA_PORT"; else echo "kafka: down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
