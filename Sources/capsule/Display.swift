#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS
import CapsuleProtocol

/// What `capsule run` does with the code's `display(obj)`: the text/plain part is printed; with
/// `--display-dir`, every other part is written to `display-NNN.EXT` there (images decoded).
struct DisplayWriter {
    let directory: String?
    private var count = 0

    init(directory: String?) { self.directory = directory }

    static let extensions = [
        "text/html": "html", "text/markdown": "md", "image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpg",
        "application/json": "json", "text/latex": "tex", "application/javascript": "js",
    ]

    mutating func show(_ bundle: [String: String], out: (String) -> Void, err: (String) -> Void) {
        count += 1
        if let text = bundle["text/plain"] { out(text.hasSuffix("\n") ? text : text + "\n") }
        let rich = bundle.filter { $0.key != "text/plain" }.sorted { $0.key < $1.key }
        guard !rich.isEmpty else { return }
        guard let directory else {
            if bundle["text/plain"] == nil {
                err("capsule: display \(count): \(rich.map(\.key).joined(separator: ", ")) not shown; --display-dir DIR writes it to files\n")
            }
            return
        }
        for (type, content) in rich {
            let name = "display-\(String(repeating: "0", count: max(0, 3 - String(count).count)))\(count)"
                + ".\(Self.extensions[type] ?? type.split(separator: "/").last.map { String($0.filter { $0.isLetter || $0.isNumber }) } ?? "bin")"
            let path = directory + "/" + name
            let bytes = type.hasPrefix("image/") && type != "image/svg+xml" ? (Base64.decode(content) ?? Array(content.utf8)) : Array(content.utf8)
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else {
                err("capsule: cannot write \(path): \(OS.errorText(errno))\n")
                continue
            }
            try? OS.writeAll(fd, bytes)
            close(fd)
        }
    }

    /// Checked before the code runs: the directory must exist (or be creatable) and be a directory.
    static func prepare(_ directory: String) -> String? {
        if !OS.fileExists(directory) && mkdir(directory, 0o755) != 0 {
            return "cannot create the display directory \(directory): \(OS.errorText(errno))"
        }
        return OS.isDirectory(directory) ? nil : "the display directory \(directory) is not a directory"
    }
}
