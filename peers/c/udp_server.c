/*
 * udp_server.c - the lecture's UDP server.
 *
 * Loops forever: receives one datagram, prints it, and answers
 * "Message received" to the address it came from. Stop it with Ctrl-C.
 *
 * usage: udp_server [-6] [-U PATH] [PORT]
 *   PORT     port to listen on (default 8080; 0 lets the kernel choose)
 *   -6       use an IPv6 socket bound to :: instead of IPv4 0.0.0.0
 *   -U PATH  use a Unix-domain datagram socket at PATH instead of UDP
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
    perror(what);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: udp_server [-6] [-U PATH] [PORT]\n");
    exit(1);
}

static int parse_port(const char *text)
{
    char *end;
    long port = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "udp_server: invalid port: %s\n", text);
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

    /* socket(): SOCK_DGRAM, i.e. UDP (or a Unix datagram socket). */
    int fd = socket(family, SOCK_DGRAM, 0);
    if (fd < 0)
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
            fprintf(stderr, "udp_server: socket path too long: %s\n", path);
            return 1;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        addr_len = sizeof *un;
        unlink(path); /* remove a stale socket file left by an earlier run */
    }

    /* bind(): receive the datagrams sent to this address. */
    if (bind(fd, (struct sockaddr *)&addr, addr_len) < 0)
        die("bind");

    if (family == AF_UNIX) {
        printf("UDP server listening on %s\n", path);
    } else {
        /* getsockname(): the port actually bound (matters for port 0). */
        addr_len = sizeof addr;
        if (getsockname(fd, (struct sockaddr *)&addr, &addr_len) < 0)
            die("getsockname");
        if (family == AF_INET)
            port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
        else
            port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
        printf("UDP server listening on port %d\n", port);
    }

    char buffer[BUFFER_SIZE];
    const char *reply = "Message received";
    for (;;) {
        /* recvfrom(): ONE datagram (at most 1023 bytes), plus the sender's
         * address so that we can answer. No connection, no accept(). */
        struct sockaddr_storage sender;
        socklen_t sender_len = sizeof sender;
        ssize_t n = recvfrom(fd, buffer, BUFFER_SIZE - 1, 0,
                             (struct sockaddr *)&sender, &sender_len);
        if (n < 0)
            die("recvfrom");
        buffer[n] = '\0';
        printf("Received: %s\n", buffer);

        /* sendto(): the reply, addressed to whoever sent the datagram.
         * A failure here (e.g. an unbound Unix client) is reported and the
         * server keeps serving. */
        if (sendto(fd, reply, strlen(reply), 0,
                   (struct sockaddr *)&sender, sender_len) < 0)
            perror("sendto");
    }
}
