// Makes the broker's ACLs exactly those of an ACL file, in one JVM and one admin connection:
// kafka-clients' Admin API (the broker's own jars; Kafka 4.x moved the kafka-acls tool into the
// heavy kafka-tools artifact, which the broker does not need).
//
//   java -cp "$KAFKA_HOME/acl-tool:$KAFKA_HOME/libs/*" KafkaAcls 127.0.0.1:9092 tools/kafka/acls.txt
//
// The connection must be a super user's (kafka.sh uses the PLAINTEXT listener, User:ANONYMOUS).
// File format: one ACL per line, '#' starts a comment, fields separated by blanks:
//   <principal> <ALLOW|DENY> <operation[,operation...]> <resource type> <LITERAL|PREFIXED> <name>
//   User:worker ALLOW READ,WRITE TOPIC LITERAL events
// ACLs on the broker that the file does not list are deleted (a restart with an edited file
// leaves no stale grant); the host is always '*'.
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public final class KafkaAcls {
  private KafkaAcls() {}

  static Set<AclBinding> parse(Path file) throws Exception {
    Set<AclBinding> wanted = new HashSet<>();
    int lineNo = 0;
    for (String raw : Files.readAllLines(file)) {
      lineNo++;
      String line = raw.replaceAll("#.*", "").trim();
      if (line.isEmpty()) {
        continue;
      }
      String[] f = line.split("\\s+");
      if (f.length != 6) {
        throw new IllegalArgumentException(file + ":" + lineNo + ": expected 6 fields, got: " + raw);
      }
      AclPermissionType permission = AclPermissionType.fromString(f[1]);
      ResourceType type = ResourceType.fromString(f[3]);
      PatternType pattern = PatternType.fromString(f[4]);
      if (permission == AclPermissionType.UNKNOWN || type == ResourceType.UNKNOWN
          || pattern == PatternType.UNKNOWN || !f[0].startsWith("User:")) {
        throw new IllegalArgumentException(file + ":" + lineNo + ": unknown value in: " + raw);
      }
      for (String op : f[2].split(",")) {
        AclOperation operation = AclOperation.fromString(op);
        if (operation == AclOperation.UNKNOWN || operation == AclOperation.ANY) {
          throw new IllegalArgumentException(file + ":" + lineNo + ": unknown operation " + op);
        }
        wanted.add(new AclBinding(new ResourcePattern(type, f[5], pattern),
            new AccessControlEntry(f[0], "*", operation, permission)));
      }
    }
    return wanted;
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: KafkaAcls <bootstrap host:port> <acl file>");
      System.exit(2);
    }
    Set<AclBinding> wanted = parse(Path.of(args[1]));
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    props.put(AdminClientConfig.CLIENT_ID_CONFIG, "streamapp-kafka-acls");
    try (Admin admin = Admin.create(props)) {
      Collection<AclBinding> present = admin.describeAcls(AclBindingFilter.ANY).values()
          .get(60, TimeUnit.SECONDS);
      List<AclBindingFilter> stale = new ArrayList<>();
      for (AclBinding binding : present) {
        if (!wanted.contains(binding)) {
          stale.add(binding.toFilter());
        }
      }
      if (!stale.isEmpty()) {
        admin.deleteAcls(stale).all().get(60, TimeUnit.SECONDS);
      }
      Set<AclBinding> missing = new HashSet<>(wanted);
      missing.removeAll(present);
      if (!missing.isEmpty()) {
        admin.createAcls(missing).all().get(60, TimeUnit.SECONDS);
      }
      System.out.printf("kafka: %d ACLs (%d added, %d removed) from %s%n",
          wanted.size(), missing.size(), stale.size(), args[1]);
    }
  }
}
