/*
 * PushService.java: push to connmix from a Java (Spring) backend with
 * java.net.http (JDK 11+), no other dependency.
 *
 * In a Spring Boot app, make it a bean, e.g. in a @Configuration class:
 *
 *   @Bean PushService pushService(@Value("${connmix.api:http://127.0.0.1:6789}") String api,
 *                                 @Value("${connmix.user:}") String user,
 *                                 @Value("${connmix.password:}") String password) {
 *       return new PushService(api, user, password);
 *   }
 *
 * then pushService.pushToUser(1001, "Hello") from a controller or service.
 * From the command line (single-file source launch):
 *
 *   java PushService.java user 1001 "Hello"            # to every connection of user 1001
 *   java PushService.java publish user:1001 'any text'  # d delivered byte for byte
 *   java PushService.java send 4294967297 'just you'    # to one connection
 *
 * Environment for the command line: CONNMIX_API, CONNMIX_USER, CONNMIX_PASSWORD.
 */
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;
import java.util.Map;
import java.util.Objects;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class PushService {

    /** The API answered {"E": {"c": code, "m": message}}, or an HTTP error status. */
    public static class ConnmixException extends RuntimeException {
        public final int code;

        public ConnmixException(int code, String message) {
            super(code + ": " + message);
            this.code = code;
        }
    }

    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private final String api;
    private final String authorization;

    /** user may be null or empty when access.users is not set (the API is open). */
    public PushService(String api, String user, String password) {
        this.api = api.replaceAll("/+$", "");
        this.authorization = user == null || user.isEmpty() ? null
                : "Basic " + Base64.getEncoder().encodeToString(
                        (user + ":" + Objects.toString(password, "")).getBytes(StandardCharsets.UTF_8));
    }

    /** Every subscriber of channel receives data as one text frame; returns the raw result JSON {"s":n,"f":n}. */
    public String publish(String channel, String data) {
        return call("/v1/mesh/publish", "{\"c\":" + json(channel) + ",\"d\":" + json(data) + "}");
    }

    /** One connection, on any node, receives data. */
    public String send(String clientId, String data) {
        return call("/v1/mesh/send", "{\"c\":" + json(clientId) + ",\"d\":" + json(data) + "}");
    }

    /** The message center's event {"event":"@user","data":{"uid":uid,"msg":msg}} to channel user:<uid>. */
    public String pushToUser(long uid, String msg) {
        String data = "{\"event\":\"@user\",\"data\":{\"uid\":" + uid + ",\"msg\":" + json(msg) + "}}";
        return publish("user:" + uid, data);
    }

    private String call(String path, String body) {
        HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(api + path))
                .timeout(Duration.ofSeconds(10))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body, StandardCharsets.UTF_8));
        if (authorization != null) {
            req.header("Authorization", authorization);
        }
        HttpResponse<String> resp;
        try {
            resp = http.send(req.build(), HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new ConnmixException(0, "cannot reach " + api + ": " + e.getMessage());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ConnmixException(0, "interrupted");
        }
        String text = resp.body();
        if (resp.statusCode() != 200) { // 401/403 access, 413 too large, ...
            throw new ConnmixException(resp.statusCode(), text.strip());
        }
        // Envelope: {"E":null,"r":{...}} or {"E":{"c":code,"m":"message"}}. With Jackson
        // on the classpath, parse it properly; this keeps the snippet dependency-free.
        if (!text.contains("\"E\":null")) {
            Matcher c = Pattern.compile("\"c\":(\\d+)").matcher(text);
            Matcher m = Pattern.compile("\"m\":\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(text);
            throw new ConnmixException(c.find() ? Integer.parseInt(c.group(1)) : 0, m.find() ? m.group(1) : text);
        }
        int r = text.indexOf("\"r\":");
        return r < 0 ? "{}" : text.substring(r + 4, text.lastIndexOf('}'));
    }

    /** A JSON string literal. */
    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (ch < 0x20) {
                        b.append(String.format("\\u%04x", (int) ch));
                    } else {
                        b.append(ch);
                    }
            }
        }
        return b.append('"').toString();
    }

    public static void main(String[] args) {
        if (args.length != 3) {
            System.err.println("usage: java PushService.java user UID MSG | publish CHANNEL DATA | send CLIENT_ID DATA");
            System.exit(2);
        }
        Map<String, String> env = System.getenv();
        PushService p = new PushService(env.getOrDefault("CONNMIX_API", "http://127.0.0.1:6789"),
                env.get("CONNMIX_USER"), env.get("CONNMIX_PASSWORD"));
        try {
            String r;
            switch (args[0]) {
                case "user": r = p.pushToUser(Long.parseLong(args[1]), args[2]); break;
                case "publish": r = p.publish(args[1], args[2]); break;
                case "send": r = p.send(args[1], args[2]); break;
                default:
                    System.err.println("unknown command " + args[0]);
                    System.exit(2);
                    return;
            }
            System.out.println(r);
        } catch (ConnmixException e) {
            System.err.println("connmix error " + e.getMessage());
            System.exit(1);
        }
    }
}
