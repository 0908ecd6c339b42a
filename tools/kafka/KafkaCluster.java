// Questions kafka.sh asks a local cluster (BROKERS=3), answered with kafka-clients' Admin API (the
// broker's own jars: Kafka 4.x keeps kafka-topics and kafka-metadata-quorum in the heavy kafka-tools
// artifact, which the broker does not need).
//
//   java -cp "$KAFKA_HOME/cluster-tool:$KAFKA_HOME/libs/*" KafkaCluster <bootstrap> <command>
//
//   leader TOPIC PARTITION     the node id leading the partition (-1: none)
//   controller                 the node id of the active controller, the KRaft quorum's leader
//   wait-brokers TIMEOUT ID... until each ID is a registered, unfenced broker (exit 1 on timeout)
//
// <bootstrap> lists every node (host:port,host:port,...), so that any one of them may be down.
// The active controller comes from DescribeQuorum (KIP-836), which a broker forwards to the
// controllers; DescribeCluster's "controller" is no answer: in KRaft, to a client bootstrapped
// through brokers, it names a random live broker.
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;

public final class KafkaCluster {
  private KafkaCluster() {}

  private static final long TIMEOUT_S = 20;

  static int leader(Admin admin, String topic, int partition) throws Exception {
    TopicDescription description = admin.describeTopics(List.of(topic)).allTopicNames()
        .get(TIMEOUT_S, TimeUnit.SECONDS).get(topic);
    for (TopicPartitionInfo info : description.partitions()) {
      if (info.partition() == partition) {
        Node leader = info.leader();
        return leader == null || leader.isEmpty() ? -1 : leader.id();
      }
    }
    throw new IllegalArgumentException("topic " + topic + " has no partition " + partition);
  }

  static int controller(Admin admin) throws Exception {
    return admin.describeMetadataQuorum().quorumInfo().get(TIMEOUT_S, TimeUnit.SECONDS).leaderId();
  }

  static boolean waitBrokers(Admin admin, long timeoutS, Set<Integer> wanted) throws Exception {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
    while (true) {
      Set<Integer> alive = new HashSet<>();
      try {
        for (Node node : admin.describeCluster().nodes().get(5, TimeUnit.SECONDS)) {
          alive.add(node.id());
        }
      } catch (Exception e) {
        // Not up yet, or the node asked is going down: ask again.
      }
      if (alive.containsAll(wanted)) {
        return true;
      }
      if (System.nanoTime() > deadline) {
        System.err.printf("kafka: brokers %s alive, waited for %s%n", alive, wanted);
        return false;
      }
      Thread.sleep(200);
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 2) {
      System.err.println("usage: KafkaCluster <bootstrap> leader TOPIC PARTITION | controller"
          + " | wait-brokers TIMEOUT_S ID...");
      System.exit(2);
    }
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(AdminClientConfig.CLIENT_ID_CONFIG, "streamapp-kafka-cluster");
    // A dead node in the bootstrap list costs a refused connection, not a long wait.
    props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
    props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
    List<String> rest = Arrays.asList(args).subList(2, args.length);
    try (Admin admin = Admin.create(props)) {
      run(admin, args[1], rest);
    } catch (ExecutionException e) {
      System.err.println("kafka: " + args[1] + ": " + e.getCause().getMessage());
      System.exit(1);
    }
  }

  static void run(Admin admin, String command, List<String> rest) throws Exception {
    switch (command) {
      case "leader" -> System.out.println(leader(admin, rest.get(0), Integer.parseInt(rest.get(1))));
      case "controller" -> System.out.println(controller(admin));
      case "wait-brokers" -> {
        Set<Integer> wanted = new HashSet<>();
        for (String id : rest.subList(1, rest.size())) {
          wanted.add(Integer.parseInt(id));
        }
        if (!waitBrokers(admin, Long.parseLong(rest.get(0)), wanted)) {
          System.exit(1);
        }
      }
      default -> {
        System.err.println("KafkaCluster: unknown command " + command);
        System.exit(2);
      }
    }
  }
}
