import Hummingbird
import NIOCore

/// The request context of every route: Hummingbird's basic one plus the connection's event loop, so a streamed
/// response can run its writing loop there (`EventLoopTaskExecutor`).
struct AgentRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The event loop of the request's connection.
    let eventLoop: any EventLoop

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        eventLoop = source.channel.eventLoop
    }
}

/// A task executor that runs jobs on one NIO event loop.
///
/// A streamed response's writing loop prefers the connection's event loop: a delta then crosses threads once (the
/// relaying task's resume lands on the event loop), and the write into the channel happens right there, inline,
/// instead of being handed from a pool thread to the event loop as a second hop. The loop's own work per delta is
/// small (frame it, write it); everything heavier runs elsewhere.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
