import EventLoopExecution

/// The request context of every route: the connection's event loop comes with it, for the streamed responses'
/// writing loops.
typealias AgentRequestContext = EventLoopRequestContext
