// A validator for the subset of JSON Schema (draft 2020-12) that docs/audit-event.schema.json
// uses, so a test can hold real audit logs against that file. A keyword outside the subset is an
// error, not ignored: the schema cannot grow a rule this validator would silently pass.
import CapsuleProtocol

struct JSONSchema {
    let root: JSONValue

    static let keywords: Set<String> = [
        "$schema", "$id", "$comment", "title", "description", "type", "required", "properties",
        "additionalProperties", "enum", "const", "pattern", "items", "oneOf", "anyOf", "allOf", "if", "then", "else",
        "minimum", "$defs", "$ref",
    ]

    /// Every problem of `value` (empty when it is valid), each naming where.
    func problems(_ value: JSONValue) throws -> [String] { try problems(value, root, at: "") }

    private func problems(_ value: JSONValue, _ schema: JSONValue, at path: String) throws -> [String] {
        if let bool = schema.boolValue { return bool ? [] : ["\(path): no value is allowed here"] }
        guard let members = schema.objectValue else { throw SchemaError("\(path): a schema must be an object or a boolean") }
        if let unknown = members.map(\.0).first(where: { !Self.keywords.contains($0) }) {
            throw SchemaError("\(path): the keyword `\(unknown)` is outside what this validator knows")
        }
        var found: [String] = []
        if let reference = schema["$ref"]?.stringValue {
            guard reference.hasPrefix("#/$defs/"), let target = root["$defs"]?[String(reference.dropFirst(8))] else {
                throw SchemaError("\(path): `$ref` \(reference) is not a #/$defs/ entry")
            }
            found += try problems(value, target, at: path)
        }
        if let type = schema["type"] {
            let allowed = type.arrayValue?.compactMap(\.stringValue) ?? [type.stringValue ?? ""]
            if !allowed.contains(where: { Self.has(value, type: $0) }) {
                return found + ["\(path): \(Self.typeName(value)) is not \(allowed.joined(separator: " or "))"]
            }
        }
        if let options = schema["enum"]?.arrayValue, !options.contains(value) {
            found.append("\(path): \(value) is not one of \(JSONValue.array(options))")
        }
        if let constant = schema["const"], constant != value { found.append("\(path): \(value) is not \(constant)") }
        if let pattern = schema["pattern"]?.stringValue, let text = value.stringValue, !(try Pattern(pattern).matches(text)) {
            found.append("\(path): \(JSONValue.string(text)) does not match \(pattern)")
        }
        if let minimum = schema["minimum"]?.doubleValue, let number = value.doubleValue, number < minimum {
            found.append("\(path): \(number) is below \(minimum)")
        }
        if let object = value.objectValue {
            for name in schema["required"]?.arrayValue?.compactMap(\.stringValue) ?? [] where value[name] == nil {
                found.append("\(path): `\(name)` is missing")
            }
            let properties = schema["properties"]?.objectValue ?? []
            for (name, member) in object {
                if let rule = properties.first(where: { $0.0 == name })?.1 {
                    found += try problems(member, rule, at: "\(path)/\(name)")
                } else if let extra = schema["additionalProperties"] {
                    found += try problems(member, extra, at: "\(path)/\(name)")
                }
            }
        }
        if let elements = value.arrayValue, let items = schema["items"] {
            for (index, element) in elements.enumerated() { found += try problems(element, items, at: "\(path)/\(index)") }
        }
        for rule in schema["allOf"]?.arrayValue ?? [] { found += try problems(value, rule, at: path) }
        if let rules = schema["anyOf"]?.arrayValue, try !rules.contains(where: { try problems(value, $0, at: path).isEmpty }) {
            found.append("\(path): matches none of anyOf")
        }
        if let rules = schema["oneOf"]?.arrayValue {
            let matching = try rules.filter { try problems(value, $0, at: path).isEmpty }.count
            if matching != 1 { found.append("\(path): matches \(matching) of oneOf, not exactly one") }
        }
        if let condition = schema["if"] {
            if try problems(value, condition, at: path).isEmpty {
                if let then = schema["then"] { found += try problems(value, then, at: path) }
            } else if let otherwise = schema["else"] {
                found += try problems(value, otherwise, at: path)
            }
        }
        return found
    }

    private static func has(_ value: JSONValue, type: String) -> Bool {
        switch type {
        case "object": value.objectValue != nil
        case "array": value.arrayValue != nil
        case "string": value.stringValue != nil
        case "boolean": value.boolValue != nil
        case "null": value.isNull
        case "number": value.doubleValue != nil
        case "integer": value.doubleValue.map { $0 == $0.rounded() } ?? false
        default: false
        }
    }

    private static func typeName(_ value: JSONValue) -> String {
        for type in ["object", "array", "string", "boolean", "null", "integer", "number"] where has(value, type: type) { return type }
        return "?"
    }
}

struct SchemaError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The anchored patterns the schema uses: `^…$` around literals (`\.` escapes one), classes such
/// as `[0-9a-f]`, `.`, each optionally with `{n}`, `{n,m}`, `?`, `*` or `+`.
struct Pattern {
    struct Atom {
        let matches: (Character) -> Bool
        let least: Int
        let most: Int
    }

    let atoms: [Atom]

    init(_ pattern: String) throws {
        guard pattern.hasPrefix("^"), pattern.hasSuffix("$") else { throw SchemaError("pattern \(pattern) is not anchored ^…$") }
        var chars = Array(pattern.dropFirst().dropLast())
        var atoms: [Atom] = []
        while !chars.isEmpty {
            let test: (Character) -> Bool
            let first = chars.removeFirst()
            switch first {
            case "[":
                guard let end = chars.firstIndex(of: "]") else { throw SchemaError("pattern \(pattern): unclosed [") }
                let set = Array(chars[..<end])
                chars.removeFirst(end + 1)
                var ranges: [ClosedRange<Character>] = []
                var index = 0
                while index < set.count {
                    if index + 2 < set.count, set[index + 1] == "-" {
                        ranges.append(set[index]...set[index + 2])
                        index += 3
                    } else {
                        ranges.append(set[index]...set[index])
                        index += 1
                    }
                }
                test = { c in ranges.contains { $0.contains(c) } }
            case "\\":
                guard !chars.isEmpty else { throw SchemaError("pattern \(pattern): a trailing backslash") }
                let literal = chars.removeFirst()
                test = { $0 == literal }
            case ".": test = { _ in true }
            case "(", ")", "|", "^", "$", "{", "*", "+", "?": throw SchemaError("pattern \(pattern): `\(first)` is outside the subset")
            default: test = { $0 == first }
            }
            var least = 1, most = 1
            if let next = chars.first {
                switch next {
                case "?": (least, most) = (0, 1); chars.removeFirst()
                case "*": (least, most) = (0, .max); chars.removeFirst()
                case "+": (least, most) = (1, .max); chars.removeFirst()
                case "{":
                    guard let end = chars.firstIndex(of: "}") else { throw SchemaError("pattern \(pattern): unclosed {") }
                    let bounds = String(chars[1..<end]).split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
                    guard let low = bounds.first ?? nil else { throw SchemaError("pattern \(pattern): bad {n,m}") }
                    least = low
                    most = bounds.count == 1 ? low : (bounds[1] ?? .max)
                    chars.removeFirst(end + 1)
                default: break
                }
            }
            atoms.append(Atom(matches: test, least: least, most: most))
        }
        self.atoms = atoms
    }

    func matches(_ text: String) -> Bool { matches(Array(text), 0, 0) }

    /// Greedy with backtracking: each atom takes as many as it may, giving back until the rest matches.
    private func matches(_ text: [Character], _ position: Int, _ atom: Int) -> Bool {
        guard atom < atoms.count else { return position == text.count }
        let current = atoms[atom]
        var taken = 0
        while taken < current.most, position + taken < text.count, current.matches(text[position + taken]) { taken += 1 }
        while taken >= current.least {
            if matches(text, position + taken, atom + 1) { return true }
            taken -= 1
        }
        return false
    }
}
