/*
 * tcp_server.c - the lecture's TCP server.
 *
 * Waits for ONE client, reads its message with a single recv(), prints it,
 * answers "Hello from server" and exits.
 *
 * usage: tcp_server [-6] [-U PATH] [PORT]
 *   PORT     port to listen on (default 8080; 0 lets the kernel choose)
 *   -6       use an IPv6 socket bound to :: instead of IPv4 0.0.0.0
 *   -U PATH  use a Unix-domain stream socket at PATH instead of TCP
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_PORT 8080
#define BUFFER_SIZE 1024

static void die(const char *what)
{
    perror(what); /* one line on stderr: "what: reason" */
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: tcp_server [-6] [-U PATH] [PORT]\n");
    exit(1);
}

static int parse_port(const char *text)
{
    char *end;
    long port = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "tcp_server: invalid port: %s\n", text);
        exit(1);
    }
    return (int)port;
}

int main(int argc, char *argv[])
{
    int family = AF_INET;
    const char *path = NULL;
    int port = DEFAULT_PORT;
    int opt;

    /* Line-buffered stdout: every line is visible at once, even in a pipe. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    opterr = 0; /* report bad options with our own one-line usage */
    while ((opt = getopt(argc, argv, "6U:")) != -1) {
        switch (opt) {
        case '6': family = AF_INET6; break;
        case 'U': family = AF_UNIX; path = optarg; break;
        default: usage();
        }
    }
    if (argc - optind > 1)
        usage();
    if (argc - optind == 1)
        port = parse_port(argv[optind]);

    /* socket(): create the listening endpoint (a file descriptor). */
    int server_fd = socket(family, SOCK_STREAM, 0);
    if (server_fd < 0)
        die("socket");

    /* The address to bind: all interfaces on PORT, or a file-system path. */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    memset(&addr, 0, sizeof addr);
    if (family == AF_INET) {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&addr;
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_ANY); /* 0.0.0.0 */
        in4->sin_port = htons(port);              /* network byte order */
        addr_len = sizeof *in4;
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_any; /* :: */
        in6->sin6_port = htons(port);
        addr_len = sizeof *in6;
    } else {
        struct sockaddr_un *un = (struct sockaddr_un *)&addr;
        if (strlen(path) >= sizeof un->sun_path) {
            fprintf(stderr, "tcp_server: socket path too long: %s\n", path);
            return 1;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        addr_len = sizeof *un;
        unlink(path); /* remove a stale socket file left by an earlier run */
    }

    if (family != AF_UNIX) {
        /* SO_REUSEADDR: allow an immediate restart while old connections
         * of this port are still in TIME_WAIT ("Address already in use"). */
        int one = 1;
        if (setsockopt(server_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
            die("setsockopt");
    }

    /* bind(): attach the socket to the local address. */
    if (bind(server_fd, (struct sockaddr *)&addr, addr_len) < 0)
        die("bind");

    /* listen(): turn it into a passive socket, up to 5 pending connections. */
    if (listen(server_fd, 5) < 0)
        die("listen");

    if (family == AF_UNIX) {
        printf("Server listening on %s\n", path);
    } else {
        /* getsockname(): the port actually bound (matters for port 0). */
        addr_len = sizeof addr;
        if (getsockname(server_fd, (struct sockaddr *)&addr, &addr_len) < 0)
            die("getsockname");
        if (family == AF_INET)
            port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
        else
            port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
        printf("Server listening on port %d\n", port);
    }

    /* accept(): block until a client connects; returns a NEW socket for it. */
    int client_fd = accept(server_fd, NULL, NULL);
    if (client_fd < 0)
        die("accept");
    printf("Client connected\n");

    /* recv(): ONE read of whatever has arrived (at most 1023 bytes), kept
     * one byte free for the terminating '\0'. Printed exactly as received. */
    char buffer[BUFFER_SIZE];
    ssize_t n = recv(client_fd, buffer, BUFFER_SIZE - 1, 0);
    if (n < 0)
        die("recv");
    buffer[n] = '\0';
    printf("Received: %s\n", buffer);

    /* send(): the reply, without a newline, as in the original. */
    const char *reply = "Hello from server";
    if (send(client_fd, reply, strlen(reply), 0) < 0)
        die("send");

    /* close(): the client connection, then the listening socket. */
    close(client_fd);
    close(server_fd);
    if (family == AF_UNIX)
        unlink(path);
    return 0;
}
