import EventLoopExecution
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import AgentService

@Suite("Event loop task executor")
struct EventLoopExecutorTests {
    @Test("a task preferring an event loop runs there, and is back there after every suspension")
    func runsOnTheLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loop = group.next()
        let executor = EventLoopTaskExecutor(loop)
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        // Resumed from another thread, as the turn resumes a stream's writing loop.
        let feeder = Thread {
            for value in 0..<50 {
                continuation.yield(value)
                usleep(200)
            }
            continuation.finish()
        }
        feeder.start()
        let (values, onLoop) = await withTaskExecutorPreference(executor) {
            var values: [Int] = []
            var onLoop = loop.inEventLoop
            for await value in stream {
                values.append(value)
                onLoop = onLoop && loop.inEventLoop
            }
            return (values, onLoop)
        }
        #expect(values == Array(0..<50))
        #expect(onLoop)
        #expect(!loop.inEventLoop)
        try await group.shutdownGracefully()
    }
}
