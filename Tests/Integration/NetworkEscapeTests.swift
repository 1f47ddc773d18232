// Reaching the network or the host's sockets from the sandbox.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleRuntime

@Suite("Network escapes") struct NetworkEscapeTests {
    let shared = SharedSession.misc

    func attempt(_ body: String) throws -> Transcript {
        let transcript = try shared.run(Python.prelude + body)
        transcript.expectFinishedCleanly()
        return transcript
    }

    @Test func connectToHostTCPListener() throws {
        let listener = try TCPListener()
        let t = try attempt(#"""
            import socket
            attempt("create_connection", lambda: socket.create_connection(("127.0.0.1", \#(listener.port)), timeout=2))
            attempt("socket-inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            attempt("socket-inet6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
            attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            """#)
        t.expectBlocked("create_connection", EPERM) // socket() itself is refused
        t.expectBlocked("socket-inet", EPERM)
        t.expectBlocked("socket-inet6", EPERM)
        t.expectBlocked("udp", EPERM)
        #expect(!Host.isReadable(listener.fd), "the host listener received a connection from the sandbox")

        // Positive control: the listener does notice a real connection.
        let client = listener.connectFromHost()
        defer { close(client) }
        Host.sleep(seconds: 0.05)
        #expect(Host.isReadable(listener.fd), "positive control: a connection from the host is seen")
    }

    @Test func exoticSocketFamilies() throws {
        let t = try attempt(#"""
            import socket
            for family, kind in [("AF_NETLINK", socket.SOCK_RAW), ("AF_PACKET", socket.SOCK_RAW),
                                 ("AF_VSOCK", socket.SOCK_STREAM), ("AF_ALG", socket.SOCK_SEQPACKET),
                                 ("AF_BLUETOOTH", socket.SOCK_STREAM), ("AF_CAN", socket.SOCK_RAW)]:
                number = getattr(socket, family, None)
                attempt(family, lambda: socket.socket(number, kind) if number is not None else os.strerror(0))
            attempt("socketpair-inet", lambda: socket.socketpair(socket.AF_INET))
            """#)
        for family in ["AF_NETLINK", "AF_PACKET", "AF_VSOCK", "AF_ALG", "AF_BLUETOOTH", "AF_CAN"] {
            t.expectBlocked(family, EPERM)
        }
        t.expectBlocked("socketpair-inet", EPERM)
    }

    @Test func dnsLookup() throws {
        let t = try attempt(#"""
            import socket
            for host in ["example.com", "localhost"]:
                try:
                    print("RESOLVED", host, socket.getaddrinfo(host, 80))
                except socket.gaierror as e:
                    print("DNS-FAILED", host, e.errno)
            """#)
        #expect(t.line("RESOLVED") == nil, "a name was resolved\n\(t)")
        // EAI_AGAIN (-3): no resolver is reachable (and there is no /etc/hosts nor /etc/resolv.conf).
        t.expectLine("DNS-FAILED example.com \(EAI_AGAIN)")
        t.expectLine("DNS-FAILED localhost \(EAI_AGAIN)")
    }

    @Test func connectToHostAbstractUnixSocket() throws {
        let name = "capsule-escape-test-\(getpid())"
        let listener = try UnixListener(name: name, abstract: true)
        let t = try attempt(#"""
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            attempt("abstract", lambda: s.connect("\0\#(name)"))
            """#)
        // Abstract names live in the network namespace (and Landlock scopes them): nothing there.
        t.expectBlocked("abstract", ECONNREFUSED, EPERM)
        #expect(!Host.isReadable(listener.fd), "the host's abstract socket received a connection")
    }

    @Test func connectToHostUnixSocketByPath() throws {
        let path = "/tmp/capsule-escape-\(getpid()).sock"
        let listener = try UnixListener(name: path, abstract: false)
        let t = try attempt(#"""
            import socket
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            attempt("path", lambda: s.connect("\#(path)"))
            attempt("docker", lambda: socket.socket(socket.AF_UNIX).connect("/var/run/docker.sock"))
            attempt("dbus", lambda: socket.socket(socket.AF_UNIX).connect("/run/dbus/system_bus_socket"))
            """#)
        t.expectBlocked("path", ENOENT)
        t.expectBlocked("docker", ENOENT)
        t.expectBlocked("dbus", ENOENT)
        #expect(!Host.isReadable(listener.fd), "the host's unix socket received a connection")
    }

    @Test func onlyLoopbackInterface() throws {
        let t = try attempt(#"""
            lines = open("/proc/net/dev").read().splitlines()[2:]
            print("INTERFACES", *sorted(line.split(":")[0].strip() for line in lines))
            print("ROUTES", len(open("/proc/net/route").read().splitlines()[1:]))
            """#)
        t.expectLine("INTERFACES lo")
        t.expectLine("ROUTES 0")
    }

    @Test func unixSocketsInsideWork() throws {
        let t = try attempt(#"""
            import socket
            a, b = socket.socketpair()
            a.sendall(b"ping")
            print("SOCKETPAIR", b.recv(4).decode())
            a.close(); b.close()
            """#)
        t.expectLine("SOCKETPAIR ping")
    }
}
