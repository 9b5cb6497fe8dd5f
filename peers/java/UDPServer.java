import java.io.IOException;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.nio.charset.StandardCharsets;

/**
 * The lecture's UDP server (Java version).
 *
 * Loops forever: receives one datagram, prints it, and answers
 * "Message received" to the address it came from. Stop it with Ctrl-C.
 *
 * usage: java UDPServer [PORT]   (default 8080; 0 lets the kernel choose)
 */
public class UDPServer {
    static final int DEFAULT_PORT = 8080;
    static final int BUFFER_SIZE = 1024;

    public static void main(String[] args) {
        if (args.length > 1) {
            System.err.println("usage: java UDPServer [PORT]");
            System.exit(1);
        }
        int port = args.length == 1 ? parsePort(args[0]) : DEFAULT_PORT;

        // new DatagramSocket(port): socket(SOCK_DGRAM) + bind() all interfaces.
        try (DatagramSocket socket = new DatagramSocket(port)) {
            System.out.println("UDP server listening on port " + socket.getLocalPort());

            byte[] buffer = new byte[BUFFER_SIZE];
            byte[] reply = "Message received".getBytes(StandardCharsets.UTF_8);
            while (true) {
                // receive(): recvfrom() ONE datagram and the sender's address.
                DatagramPacket request = new DatagramPacket(buffer, buffer.length);
                socket.receive(request);
                String message = new String(
                        request.getData(), 0, request.getLength(), StandardCharsets.UTF_8);
                System.out.println("Received: " + message);

                // send(): sendto() the reply to the sender's address and port.
                socket.send(new DatagramPacket(reply, reply.length, request.getSocketAddress()));
            }
        } catch (IOException e) {
            System.err.println("UDPServer: " + e.getMessage());
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
        System.err.println("UDPServer: invalid port: " + text);
        System.exit(1);
        return -1;
    }
}
