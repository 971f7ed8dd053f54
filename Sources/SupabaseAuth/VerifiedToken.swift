public import Foundation

/// The identity a verified access token carries.
public struct VerifiedToken: Sendable, Equatable {
    /// The user (`sub`).
    public let userID: UUID
    /// `role` (always `authenticated` for an accepted token).
    public let role: String
    /// `exp`.
    public let expiresAt: Date
    /// `session_id`, when present.
    public let sessionID: String?
    /// `is_anonymous` (Supabase anonymous sign-ins are `authenticated` too).
    public let isAnonymous: Bool
}
