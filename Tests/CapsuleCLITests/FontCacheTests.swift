// The font list `capsule env create` keeps comes out of a sandbox: only a name matplotlib gives
// its list may become a file, and nothing that leaves the cache's directory.
import Testing
@testable import capsule

@Suite struct FontCacheTests {
    @Test(arguments: ["fontlist-v3.11.0.json", "fontlist-v330.json"])
    func matplotlibsNamesAreKept(_ name: String) {
        #expect(FontCache.isFontListName(name))
    }

    @Test(arguments: ["fontlist-v.json", "fontlist-v3.11.0.json/../../x.json", "fontlist-v../../a.json", "../fontlist-v3.json",
                      "fontlist-v3.11.0.json.py", "fontlist-v3 .json", "fontlist-v\(String(repeating: "1", count: 40)).json", ""])
    func anythingElseIsRefused(_ name: String) {
        #expect(!FontCache.isFontListName(name))
    }
}
