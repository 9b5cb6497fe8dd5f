/*
 * udp_client.c - the lecture's UDP client.
 *
 * Sends the datagram "Hello from UDP client", waits (at most 5 s) for one
 * datagram back, prints it and exits.
 *
 * usage: udp_client [-U PATH] [HOST [PORT]]
 *   HOST     name or address of the server (default 127.0.0.1; ::1 works)
 *   PORT     port of the server (default 8080)
 *   -U PATH  send to a Unix-domain datagram socket at PATH instead
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT "8080"
#define BUFFER_SIZE 1024
#define TIMEOUT_SECONDS 5

/* Our own Unix-domain address (the server needs one to reply to). */
static char local_path[sizeof ((struct sockaddr_un *)0)->sun_path];

static void remove_local_path(void)
{
    if (local_path[0] != '\0')
        unlink(local_path);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: udp_client [-U PATH] [HOST [PORT]]\n");
    exit(1);
}

int main(int argc, char *argv[])
{
    const char *path = NULL;
    const char *host = DEFAULT_HOST;
    const char *port = DEFAULT_PORT;
    int opt;

    setvbuf(stdout, NULL, _IOLBF, 0);

    opterr = 0; /* report bad options with our own one-line usage */
    while ((opt = getopt(argc, argv, "U:")) != -1) {
        switch (opt) {
        case 'U': path = optarg; break;
        default: usage();
        }
    }
    int rest = argc - optind;
    if (rest > 2 || (path != NULL && rest > 0))
        usage();
    if (rest >= 1)
        host = argv[optind];
    if (rest == 2)
        port = argv[optind + 1];

    int fd;
    struct sockaddr_storage server;
    socklen_t server_len;
    memset(&server, 0, sizeof server);

    if (path != NULL) {
        /* The server's address: a file-system path. */
        struct sockaddr_un *un = (struct sockaddr_un *)&server;
        if (strlen(path) >= sizeof un->sun_path) {
            fprintf(stderr, "udp_client: socket path too long: %s\n", path);
            return 1;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        server_len = sizeof *un;

        fd = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (fd < 0)
            die("socket");

        /* Unlike UDP, an unbound Unix datagram socket has no address the
         * server could reply to: bind() a temporary path of our own, and
         * remove it when the program exits. */
        const char *tmp = getenv("TMPDIR");
        if (tmp == NULL || *tmp == '\0')
            tmp = "/tmp";
        struct sockaddr_un local;
        memset(&local, 0, sizeof local);
        local.sun_family = AF_UNIX;
        int len = snprintf(local.sun_path, sizeof local.sun_path,
                           "%s/udp_client.%ld.sock", tmp, (long)getpid());
        if (len < 0 || (size_t)len >= sizeof local.sun_path) {
            fprintf(stderr, "udp_client: temporary socket path too long\n");
            return 1;
        }
        unlink(local.sun_path);
        if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
            die("bind");
        strcpy(local_path, local.sun_path);
        atexit(remove_local_path);
    } else {
        /* getaddrinfo(): resolve HOST and PORT to an IPv4 or IPv6 address. */
        struct addrinfo hints, *results;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_DGRAM; /* UDP */
        int err = getaddrinfo(host, port, &hints, &results);
        if (err != 0) {
            fprintf(stderr, "udp_client: %s port %s: %s\n", host, port, gai_strerror(err));
            return 1;
        }
        /* socket(): a datagram endpoint of the family of the first address.
         * No bind(): the kernel picks our port on the first sendto(). */
        fd = socket(results->ai_family, results->ai_socktype, results->ai_protocol);
        if (fd < 0)
            die("socket");
        memcpy(&server, results->ai_addr, results->ai_addrlen);
        server_len = results->ai_addrlen;
        freeaddrinfo(results);
    }

    /* SO_RCVTIMEO: a datagram can be lost, so never wait forever. */
    struct timeval timeout = { TIMEOUT_SECONDS, 0 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0)
        die("setsockopt");

    /* sendto(): one datagram, addressed explicitly (no connection). */
    const char *message = "Hello from UDP client";
    if (sendto(fd, message, strlen(message), 0, (struct sockaddr *)&server, server_len) < 0)
        die("sendto");

    /* recvfrom(): ONE datagram back (at most 1023 bytes). */
    char buffer[BUFFER_SIZE];
    ssize_t n = recvfrom(fd, buffer, BUFFER_SIZE - 1, 0, NULL, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            fprintf(stderr, "udp_client: no reply within %d seconds\n", TIMEOUT_SECONDS);
            exit(1);
        }
        die("recvfrom");
    }
    buffer[n] = '\0';
    printf("Received: %s\n", buffer);

    /* close(): release the socket. */
    close(fd);
    return 0;
}
