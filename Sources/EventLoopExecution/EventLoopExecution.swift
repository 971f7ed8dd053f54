public import Hummingbird
public import NIOCore

/// A request context of Hummingbird's basic kind plus the connection's event loop, so a streamed response can run its
/// writing loop there (`EventLoopTaskExecutor`). Every route of the service uses it, and so does `agent-bench
/// relay-floor`, which measures the same writer.
public struct EventLoopRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The event loop of the request's connection.
    public let eventLoop: any EventLoop

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        eventLoop = source.channel.eventLoop
    }
}

/// A task executor that runs jobs on one NIO event loop.
///
/// A streamed response's writing loop prefers the connection's event loop: a delta then crosses threads once (the
/// relaying thread's resume lands on the event loop), and the write into the channel happens right there, inline,
/// instead of being handed from a pool thread to the event loop as a second hop. The loop's own work per delta is
/// small (frame it, write it); everything heavier runs elsewhere.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
