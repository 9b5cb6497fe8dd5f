import java.io.IOException;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;

/**
 * The lecture's UDP client (Java version).
 *
 * Sends the datagram "Hello from UDP client", waits (at most 5 s) for one
 * datagram back, prints it and exits.
 *
 * usage: java UDPClient [HOST [PORT]]   (defaults 127.0.0.1 and 8080)
 */
public class UDPClient {
    static final String DEFAULT_HOST = "127.0.0.1";
    static final int DEFAULT_PORT = 8080;
    static final int BUFFER_SIZE = 1024;
    static final int TIMEOUT_MILLIS = 5000;

    public static void main(String[] args) {
        if (args.length > 2) {
            System.err.println("usage: java UDPClient [HOST [PORT]]");
            System.exit(1);
        }
        String host = args.length >= 1 ? args[0] : DEFAULT_HOST;
        int port = args.length == 2 ? parsePort(args[1]) : DEFAULT_PORT;

        // new DatagramSocket(): socket(SOCK_DGRAM) on a port the kernel picks.
        try (DatagramSocket socket = new DatagramSocket()) {
            // SO_RCVTIMEO: a datagram can be lost, so never wait forever.
            socket.setSoTimeout(TIMEOUT_MILLIS);

            // send(): sendto() one datagram to HOST:PORT (no connection).
            InetAddress address = InetAddress.getByName(host);
            byte[] message = "Hello from UDP client".getBytes(StandardCharsets.UTF_8);
            socket.send(new DatagramPacket(message, message.length, address, port));

            // receive(): recvfrom() ONE datagram back.
            byte[] buffer = new byte[BUFFER_SIZE];
            DatagramPacket reply = new DatagramPacket(buffer, buffer.length);
            socket.receive(reply);
            System.out.println("Received: "
                    + new String(reply.getData(), 0, reply.getLength(), StandardCharsets.UTF_8));
        } catch (SocketTimeoutException e) {
            System.err.println("UDPClient: no reply within " + TIMEOUT_MILLIS / 1000 + " seconds");
            System.exit(1);
        } catch (IOException e) {
            System.err.println("UDPClient: " + e.getMessage());
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
        System.err.println("UDPClient: invalid port: " + text);
        System.exit(1);
        return -1;
    }
}
