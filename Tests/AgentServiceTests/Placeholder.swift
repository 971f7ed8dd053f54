import Testing

@Suite struct PlaceholderAgentServiceTests {
    @Test func builds() { #expect(Bool(true)) }
}
