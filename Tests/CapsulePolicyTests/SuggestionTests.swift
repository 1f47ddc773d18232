import Testing
@testable import CapsulePolicy

@Suite struct SuggestionTests {
    @Test func editDistanceSmallCases() {
        #expect(PolicyLoader.editDistance("", "") == 0)
        #expect(PolicyLoader.editDistance("", "abc") == 3)
        #expect(PolicyLoader.editDistance("abc", "") == 3)
        #expect(PolicyLoader.editDistance("abc", "abc") == 0)
        #expect(PolicyLoader.editDistance("a", "b") == 1)
        #expect(PolicyLoader.editDistance("abc", "abd") == 1)   // substitution
        #expect(PolicyLoader.editDistance("abc", "abcd") == 1)  // insertion
        #expect(PolicyLoader.editDistance("abcd", "acd") == 1)  // deletion
        #expect(PolicyLoader.editDistance("ab", "ba") == 2)     // a transposition is two edits
        #expect(PolicyLoader.editDistance("kitten", "sitting") == 3)
        #expect(PolicyLoader.editDistance("flaw", "lawn") == 2)
        #expect(PolicyLoader.editDistance("memroy_mb", "memory_mb") == 2)
        #expect(PolicyLoader.editDistance("limit", "limits") == 1)
        // Characters, not bytes: é is one edit from e.
        #expect(PolicyLoader.editDistance("é", "e") == 1)
        #expect(PolicyLoader.editDistance("😀x", "x") == 1)
    }

    @Test func editDistanceIsSymmetric() {
        let words = ["", "a", "level", "limits", "memory_mb", "max_fds", "timeout_s", "sandbox", "😀"]
        for a in words {
            for b in words {
                #expect(PolicyLoader.editDistance(a, b) == PolicyLoader.editDistance(b, a), "\(a) / \(b)")
            }
        }
    }

    @Test func suggestionSmallCases() {
        #expect(PolicyLoader.suggestion("limit", among: ["limits"]) == "; did you mean `limits`?")
        #expect(PolicyLoader.suggestion("memroy_mb", among: ["memory_mb", "max_fds"]) == "; did you mean `memory_mb`?")
        #expect(PolicyLoader.suggestion("limits", among: ["limits"]) == "; did you mean `limits`?")
        #expect(PolicyLoader.suggestion("network", among: ["limits"]) == "")
        #expect(PolicyLoader.suggestion("x", among: []) == "")
        #expect(PolicyLoader.suggestion("", among: ["ab"]) == "")
        #expect(PolicyLoader.suggestion("", among: ["abc"]) == "")
        // Up to a third of the last part's length in edits, and at least one.
        #expect(PolicyLoader.suggestion("abc", among: ["xyc"]) == "")
        #expect(PolicyLoader.suggestion("abc", among: ["xyz"]) == "")
        #expect(PolicyLoader.suggestion("abcdefghijkl", among: ["abcdefghiXYZ"]) == "; did you mean `abcdefghiXYZ`?")
        #expect(PolicyLoader.suggestion("abcdefghijkl", among: ["abcdefghWXYZ"]) == "; did you mean `abcdefghWXYZ`?")
        // The nearest wins; on a tie, the first listed.
        #expect(PolicyLoader.suggestion("max_fd", among: ["max_fds", "max_fdss"]) == "; did you mean `max_fds`?")
        #expect(PolicyLoader.suggestion("ab", among: ["aa", "bb"]) == "; did you mean `aa`?")
        #expect(PolicyLoader.suggestion("ab", among: ["bb", "aa"]) == "; did you mean `bb`?")
    }
}
