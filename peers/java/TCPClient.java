import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

/**
 * The lecture's TCP client (Java version).
 *
 * Connects, sends "Hello from client" as a newline-terminated line, reads
 * ONE line back, prints it and exits.
 *
 * usage: java TCPClient [HOST [PORT]]   (defaults 127.0.0.1 and 8080)
 */
public class TCPClient {
    static final String DEFAULT_HOST = "127.0.0.1";
    static final int DEFAULT_PORT = 8080;

    public static void main(String[] args) {
        if (args.length > 2) {
            System.err.println("usage: java TCPClient [HOST [PORT]]");
            System.exit(1);
        }
        String host = args.length >= 1 ? args[0] : DEFAULT_HOST;
        int port = args.length == 2 ? parsePort(args[1]) : DEFAULT_PORT;

        // new Socket(host, port): resolve HOST, socket() and connect().
        try (Socket socket = new Socket(host, port)) {
            BufferedReader in = new BufferedReader(
                    new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
            PrintWriter out = new PrintWriter(
                    new OutputStreamWriter(socket.getOutputStream(), StandardCharsets.UTF_8));

            // println() + flush(): send() the message with a newline.
            out.println("Hello from client");
            out.flush();

            // readLine(): recv() until a newline or the end of the stream.
            String line = in.readLine();
            System.out.println("Received: " + (line == null ? "" : line));
        } catch (IOException e) { // close() happens in try-with-resources
            System.err.println("TCPClient: " + e.getMessage());
            System.exit(1);
        }
    }

    static int parsePort(String text) {
        try {
            int port = Integer.parseInt(text);
            if (port >= 0 && port <= 65535) {
                return port;
            }
        } catch (NumberFormatException e) {
            // fall through
        }
        System.err.println("TCPClient: invalid port: " + text);
        System.exit(1);
        return -1;
    }
}
