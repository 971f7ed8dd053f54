import Testing

@Suite struct PlaceholderThreadStoreTests {
    @Test func builds() { #expect(Bool(true)) }
}
