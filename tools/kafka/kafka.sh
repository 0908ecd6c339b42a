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
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
KAFKA_HOME="${KAFKA_HOME:-$root/.kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-9094}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
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

build_acl_tool() {
  # KafkaAcls.java compiled once per content against the fetched kafka-clients (javac: ~2 s).
  local stamp; stamp="$acl_tool/.stamp-$(cat "$here/KafkaAcls.java" "$libs"/.stamp-* | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  rm -rf "$acl_tool"; mkdir -p "$acl_tool"
  javac -nowarn -d "$acl_tool" -cp "$libs/*" "$here/KafkaAcls.java" >"$KAFKA_HOME/acl-tool.log" 2>&1 \
    || { cat "$KAFKA_HOME/acl-tool.log" >&2; die "could not compile tools/kafka/KafkaAcls.java"; }
  touch "$stamp"
}

apply_acls() {
  # As a super user (PLAINTEXT: User:ANONYMOUS). ACLs live in the metadata log, so a restart keeps
  # them; applying again anyway makes the broker's set equal to the file's (stale ones removed).
  java -Xmx128m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_HOME/config/tools-log4j2.properties" \
      -cp "$acl_tool:$libs/*" KafkaAcls "127.0.0.1:$KAFKA_PORT" "$here/acls.txt" \
    || die "could not apply the ACLs of tools/kafka/acls.txt (log: $logfile)"
}

write_config() {
  mkdir -p "$KAFKA_HOME/config"
  sed -e "s#@DATA@#$KAFKA_HOME/data#g" -e "s#@PORT@#$KAFKA_PORT#g" \
      -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" -e "s#@SASL_PORT@#$KAFKA_SASL_PORT#g" \
      -e "s#@SSL_DIR@#$ssl_dir#g" -e "s#@SSL_PASSWORD@#$ssl_password#g" \
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
  make_certs
  build_acl_tool
  write_config
  local t0; t0=$(date +%s.%N)
  if [ "${1:-fresh}" = fresh ]; then
    # A throw-away broker: a fresh data dir on every start, so no state leaks between runs.
    rm -rf "$KAFKA_HOME/data"; mkdir -p "$KAFKA_HOME/data"
    local scram=(--add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$sasl_password]"
                 --add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]")
    local user
    for user in "${role_users[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-256=[name=$user,password=$user-secret]"
              --add-scram "SCRAM-SHA-512=[name=$user,password=$user-secret]")
    done
    java -Xmx256m -Dlog4j2.configurationFile="$KAFKA_HOME/config/tools-log4j2.properties" \
        -cp "$libs/*" kafka.tools.StorageTool format --standalone --cluster-id "$(cluster_id)" \
        --config "$KAFKA_HOME/config/server.properties" \
        "${scram[@]}" \
        >"$KAFKA_HOME/format.log" 2>&1 \
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
  apply_acls
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
  status) if port_open; then echo "kafka: up on 127.0.0.1:$KAFKA_PORT"; else echo "kafka: down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
