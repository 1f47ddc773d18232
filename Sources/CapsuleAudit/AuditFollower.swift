#if canImport(Glibc)
import Glibc
#endif
import CapsuleCapabilities
import CapsuleOS
import CapsuleProtocol

/// Reads a live audit log as it grows (`audit tail -f`): each call returns the lines completed
/// since the last. When the file at the path is replaced (rotation moves it to `<path>.N` and puts
/// a new file there), the rest of the old file is read first, then the new one from its start.
public final class AuditFollower {
    public let path: String
    private var fd: Int32 = -1
    private var inode: UInt64 = 0
    private var offset = 0
    private var pending: [UInt8] = []
    private var lineNumber = 0

    public init(_ path: String) throws(AuditFailure) {
        self.path = path
        try open()
    }

    deinit { OS.close(fd) }

    /// Every line completed since the last call (a line still being written waits for its newline).
    public func next() throws(AuditFailure) -> [AuditLine] {
        var out = try readToEnd()
        if let replacement = replaced() {
            out += try readToEnd() // lines the writer finished before it moved the file on
            OS.close(fd)
            fd = replacement.fd
            inode = replacement.inode
            offset = 0
            pending = []
            lineNumber = 0
            out += try readToEnd()
        }
        return out
    }

    private func open() throws(AuditFailure) {
        do {
            fd = try OS.open(path, flags: O_RDONLY)
            inode = try OS.fileStatus(fd).inode
        } catch {
            throw AuditFailure("cannot read the audit log \(path.escapingControlCharacters): \(OS.errorText(error.errno))")
        }
    }

    /// The file now at `path`, opened, when it is not the one being read.
    private func replaced() -> (fd: Int32, inode: UInt64)? {
        guard let fd = try? OS.open(path, flags: O_RDONLY) else { return nil }
        guard let status = try? OS.fileStatus(fd), status.inode != inode else {
            OS.close(fd)
            return nil
        }
        return (fd, status.inode)
    }

    private func readToEnd() throws(AuditFailure) -> [AuditLine] {
        var out: [AuditLine] = []
        while true {
            let chunk: [UInt8]
            do { chunk = try OS.read(fd, at: offset, count: 1 << 16) } catch {
                throw AuditFailure("cannot read the audit log \(path.escapingControlCharacters): \(OS.errorText(error.errno))")
            }
            if chunk.isEmpty { return out }
            offset += chunk.count
            pending += chunk
            guard let last = pending.lastIndex(of: UInt8(ascii: "\n")) else { continue }
            let complete = AuditReader.lines(in: Array(pending[...last]), file: path)
            out += complete.map { AuditLine(number: lineNumber + $0.number, file: path, bytes: $0.bytes, event: $0.event, terminated: true) }
            lineNumber += complete.count
            pending.removeFirst(last + 1)
        }
    }
}
