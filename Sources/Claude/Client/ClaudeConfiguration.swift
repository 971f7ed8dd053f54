/// Settings of a ``ClaudeClient``.
public struct ClaudeConfiguration: Sendable {
    /// The API key, sent as `x-api-key`.
    public var apiKey: String
    /// The API base URL, without a trailing `/v1`.
    public var baseURL: String
    /// Retries of a failed request before any content was delivered.
    public var maxRetries: Int
    /// Longest time to establish a connection.
    public var connectTimeout: Duration
    /// A stream that receives no bytes for this long fails as `stalled`.
    public var idleTimeout: Duration
    /// Multiplier on retry delays (1.0 in production; tests may use 0.01).
    public var retryDelayScale: Double

    /// Creates a configuration.
    public init(
        apiKey: String,
        baseURL: String = "https://api.anthropic.com",
        maxRetries: Int = 2,
        connectTimeout: Duration = .seconds(10),
        idleTimeout: Duration = .seconds(300),
        retryDelayScale: Double = 1.0
    ) {
        self.apiKey = apiKey
        self.baseURL = baseURL
        self.maxRetries = maxRetries
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.retryDelayScale = retryDelayScale
    }
}
