import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

/**
 * The lecture's TCP server (Java version).
 *
 * Waits for ONE client, reads ONE line from it (so it waits for a newline
 * or the end of the stream), prints it, answers "Hello from server" as a
 * newline-terminated line and exits.
 *
 * usage: java TCPServer [PORT]   (default 8080; 0 lets the kernel choose)
 */
public class TCPServer {
    static final int DEFAULT_PORT = 8080;

    public static void main(String[] args) {
        if (args.length > 1) {
            System.err.println("usage: java TCPServer [PORT]");
            System.exit(1);
        }
        int port = args.length == 1 ? parsePort(args[0]) : DEFAULT_PORT;

        // new ServerSocket(): socket(); bind() comes later so that
        // SO_REUSEADDR can be set first.
        try (ServerSocket server = new ServerSocket()) {
            server.setReuseAddress(true);                     // SO_REUSEADDR
            server.bind(new InetSocketAddress(port), 5);      // bind() all interfaces + listen(5)
            // getLocalPort(): the port actually bound (matters for port 0).
            System.out.println("Server listening on port " + server.getLocalPort());

            // accept(): block until a client connects; a NEW socket for it.
            try (Socket client = server.accept()) {
                System.out.println("Client connected");

                BufferedReader in = new BufferedReader(
                        new InputStreamReader(client.getInputStream(), StandardCharsets.UTF_8));
                PrintWriter out = new PrintWriter(
                        new OutputStreamWriter(client.getOutputStream(), StandardCharsets.UTF_8));

                // readLine(): recv() until a newline or the end of the stream.
                String line = in.readLine();
                System.out.println("Received: " + (line == null ? "" : line));

                // println() + flush(): send() the reply with a newline.
                out.println("Hello from server");
                out.flush();
            } // close(): the client connection
        } catch (IOException e) {
            System.err.println("TCPServer: " + e.getMessage());
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
        System.err.println("TCPServer: invalid port: " + text);
        System.exit(1);
        return -1;
    }
}
