import ArgumentParser
import CapsulePolicy

/// Shell completion (`capsule --generate-completion-script bash|zsh|fish`, README.md).
enum Completion {
    /// A policy argument: the level names, then `.toml` files. One command per shell, because a
    /// completion kind offers either fixed words or files, and a policy is either.
    static var policy: CompletionKind {
        let levels = Level.allCases.map(\.rawValue).joined(separator: " ")
        switch CompletionShell.requesting {
        case .bash?:
            // Directories too (`complete -o filenames` adds their slash), so a path can be walked.
            return .shellCommand("printf '%s\\n' \(levels); compgen -o plusdirs -f -X '!*.toml' -- \"$cur\"")
        case .zsh?:
            // zsh lists these as plain words, so files a few directories down are named in full.
            return .shellCommand("print -rl -- \(levels) $PREFIX*.toml(N) $PREFIX*/*.toml(N) $PREFIX*/*/*.toml(N)")
        case .fish?:
            return .shellCommand("printf '%s\\n' \(levels); __fish_complete_suffix .toml")
        default:
            return .file(extensions: ["toml"])
        }
    }

    static let script = CompletionKind.file(extensions: ["py"])
}
